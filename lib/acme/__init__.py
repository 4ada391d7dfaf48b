"""acmegw-acme: an RFC 8555 ACME client that answers dns-01 through the gateway.

Layers, bottom up (certbot's ``acme`` package split); each concern is one module:

* :mod:`lib.acme.jws` and :mod:`lib.acme.keys`: signatures, keys, CSRs;
* :mod:`lib.acme.transport`: HTTPS, directory, nonce pool, ``badNonce`` retry,
  ``problem+json`` errors;
* :mod:`lib.acme.messages` and :mod:`lib.acme.client`: the protocol steps (they raise
  protocol errors only: what the user should do about them is decided above);
* :mod:`lib.acme.dns01`: publishing TXT values (gateway or in-process provider);
* :mod:`lib.acme.identifiers`: which names a certificate can hold;
* :mod:`lib.acme.store`, :mod:`lib.acme.versions`, :mod:`lib.acme.durable`: the state
  directory, a certificate's versioned files, crash-safe writes;
* :mod:`lib.acme.renewal`: when a certificate is due (ARI, lifetime);
* :mod:`lib.acme.accounts`: the account at each CA, rollover, deactivation;
* :mod:`lib.acme.orders`: one certificate at one CA, in RFC 8555 order, resumable;
* :mod:`lib.acme.failover`: which CA to ask, how often, when to stop;
* :mod:`lib.acme.publishing`: a run's DNS side (the solver a certificate names, the
  check before ordering, what earlier runs left published);
* :mod:`lib.acme.hooks`, :mod:`lib.acme.revocation`: pre-, post- and deploy hooks,
  revocation;
* :mod:`lib.acme.issuance`: what a run does with each certificate;
* :mod:`lib.acme.options`: how a run behaves, whatever the certificate;
* :mod:`lib.acme.cli`: the ``acmegw-acme`` command -- :mod:`lib.acme.arguments` (the
  command line as data), :mod:`lib.acme.commands` (each command),
  :mod:`lib.acme.output` (what it prints, its exit status).

Every error is an :class:`lib.acme.errors.AcmeError`.
"""
