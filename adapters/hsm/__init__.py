"""A payShield-style HSM simulator (``payswitch sim hsm``); the codec and the command logic are in
``switch.security.thales`` and ``switch.security.thales_host``, the switch's client in ``switch.io.hsm``."""
