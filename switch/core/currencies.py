"""The currencies field 49 may name: ISO 4217 numeric codes of legal tender.

Section 2 of the terminal interface (``docs/terminal-interface.md``) makes
field 49 "Currency code, ISO 4217 numeric".  :data:`CURRENCIES` holds the
three-digit codes of ISO 4217 list one (current currencies, the table the
maintenance agency, SIX, publishes), as published on 2026-01-01: every
national and regional currency in use as legal tender.  When an amendment
of the standard adds a currency, add its code below; when one withdraws a
currency, take its code out once the currency is no longer legal tender.

Left out, although list one has them, because no terminal can take them in
payment:

- fund codes (the list marks them ``IsFund``): 940 UYI, 947 CHE, 948 CHW,
  970 COU, 979 MXV, 984 BOV, 990 CLF, 997 USN;
- units of account indexed to something else: 927 UYW (Uruguay's wage
  index unit) and 396 XAD (Arab Monetary Fund accounting dinar);
- the X codes that are no currency a card can pay in: 955-958 bond market
  units, 959 XAU, 961 XAG, 962 XPT, 964 XPD (precious metals), 960 XDR,
  965 XUA, 994 XSU (units of account of the IMF, the African Development
  Bank and the SUCRE system), 963 XTS (reserved for testing) and 999 XXX
  (no currency).

Withdrawn codes are not here either (998 USS, 191 HRK, 694 SLL, 932 ZWL,
931 CUC, 975 BGN, ...): list one no longer has them.  The regional
currencies (950 XAF, 951 XCD, 952 XOF, 953 XPF, 532 XCG) are in.
"""
from __future__ import annotations

# ISO 4217 list one: numeric code, alphabetic code.
_LIST_ONE = """
    008 ALL   012 DZD   032 ARS   036 AUD   044 BSD   048 BHD
    050 BDT   051 AMD   052 BBD   060 BMD   064 BTN   068 BOB
    072 BWP   084 BZD   090 SBD   096 BND   104 MMK   108 BIF
    116 KHR   124 CAD   132 CVE   136 KYD   144 LKR   152 CLP
    156 CNY   170 COP   174 KMF   188 CRC   192 CUP   203 CZK
    208 DKK   214 DOP   222 SVC   230 ETB   232 ERN   238 FKP
    242 FJD   262 DJF   270 GMD   292 GIP   320 GTQ   324 GNF
    328 GYD   332 HTG   340 HNL   344 HKD   348 HUF   352 ISK
    356 INR   360 IDR   364 IRR   368 IQD   376 ILS   388 JMD
    392 JPY   398 KZT   400 JOD   404 KES   408 KPW   410 KRW
    414 KWD   417 KGS   418 LAK   422 LBP   426 LSL   430 LRD
    434 LYD   446 MOP   454 MWK   458 MYR   462 MVR   480 MUR
    484 MXN   496 MNT   498 MDL   504 MAD   512 OMR   516 NAD
    524 NPR   532 XCG   533 AWG   548 VUV   554 NZD   558 NIO
    566 NGN   578 NOK   586 PKR   590 PAB   598 PGK   600 PYG
    604 PEN   608 PHP   634 QAR   643 RUB   646 RWF   654 SHP
    682 SAR   690 SCR   702 SGD   704 VND   706 SOS   710 ZAR
    728 SSP   748 SZL   752 SEK   756 CHF   760 SYP   764 THB
    776 TOP   780 TTD   784 AED   788 TND   800 UGX   807 MKD
    818 EGP   826 GBP   834 TZS   840 USD   858 UYU   860 UZS
    882 WST   886 YER   901 TWD   924 ZWG   925 SLE   926 VED
    928 VES   929 MRU   930 STN   933 BYN   934 TMT   936 GHS
    938 SDG   941 RSD   943 MZN   944 AZN   946 RON   949 TRY
    950 XAF   951 XCD   952 XOF   953 XPF   967 ZMW   968 SRD
    969 MGA   971 AFN   972 TJS   973 AOA   976 CDF   977 BAM
    978 EUR   980 UAH   981 GEL   985 PLN   986 BRL
"""

CURRENCIES: frozenset[str] = frozenset(_LIST_ONE.split()[::2])


def is_currency(code: str | None) -> bool:
    """Whether ``code`` is the ISO 4217 numeric code of a currency in :data:`CURRENCIES`."""
    return code in CURRENCIES
