"""Typed keys for the state kept on the aiohttp application (no globals)."""

from __future__ import annotations

from aiohttp import web

from gateway.acmedns import AccountStore
from gateway.auth import Authenticator
from gateway.config import Config
from gateway.janitor import Janitor
from gateway.journal import Journal
from gateway.live import Live, LiveProvider
from gateway.metrics import Metrics
from gateway.refusals import RefusalAudit
from gateway.service import ChallengeService
from gateway.state import State

CONFIG = web.AppKey("config", Config)
PROVIDER = web.AppKey("provider", LiveProvider)
STATE = web.AppKey("state", State)
JOURNAL = web.AppKey("journal", Journal)
SERVICE = web.AppKey("service", ChallengeService)
AUTHENTICATOR = web.AppKey("authenticator", Authenticator)
JANITOR = web.AppKey("janitor", Janitor)
ACCOUNTS = web.AppKey("accounts", AccountStore)
METRICS = web.AppKey("metrics", Metrics)
LIVE = web.AppKey("live", Live)
REFUSALS = web.AppKey("refusals", RefusalAudit)
