"""acmegw-acme: an RFC 8555 ACME client that answers dns-01 through the gateway.

Layers, bottom up (certbot's ``acme`` package split):

* :mod:`lib.acme.jws` and :mod:`lib.acme.keys`: signatures, keys, CSRs;
* :mod:`lib.acme.transport`: HTTPS, directory, nonce pool, ``badNonce`` retry,
  ``problem+json`` errors;
* :mod:`lib.acme.messages` and :mod:`lib.acme.client`: the protocol steps;
* :mod:`lib.acme.dns01`: publishing TXT values (gateway or in-process provider);
* :mod:`lib.acme.store`: the state directory; :mod:`lib.acme.renewal`: when to renew;
* :mod:`lib.acme.issuance`: whole operations in RFC 8555 order, with CA failover;
* :mod:`lib.acme.cli`: the ``acmegw-acme`` command.

Every error is an :class:`lib.acme.errors.AcmeError`.
"""
