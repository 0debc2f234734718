"""Terminal and host cryptography (terminal interface spec section 8).

Pure code: no asyncio, no sockets, no clock. Ciphers come from
``cryptography``; this package only arranges them the way the payment
standards say (ISO 9797-1, RFC 4493, ISO 9564, ANSI X9.24).

- :mod:`.ciphers`   TDES / AES block operations, key length checks
- :mod:`.mac`       retail MAC (ISO 9797-1 algorithm 3), AES-CMAC, check values
- :mod:`.pinblock`  ISO 9564 PIN blocks, formats 0, 1 (recognised only), 3 and 4
- :mod:`.dukpt`     TDES DUKPT (X9.24-1) and AES DUKPT (X9.24-3)
- :mod:`.module`    the ``SecurityModule`` protocol every caller goes through
- :mod:`.software`  a software module over an encrypted key store
- :mod:`.keystore`  the encrypted key store file
- :mod:`.terminal`  the terminal side: MAC a request, build PIN blocks
- :mod:`.config`    policy, key references and module choice (msgspec)
"""
