"""The embedded default configuration: the sandbox of spec section 7.

``payswitch serve`` without ``--config`` runs on it (``switch.config.default``
parses it and adds the sandbox's security section): listeners on 8583
(terminal-87) and 8584 (iso87-ascii), HTTP on 127.0.0.1:9583, a journal under
the working directory, the demo merchants, and the bundled simulators routed
as the spec's table says.  bank-a's host link is MACed (:data:`HOST_MACS`).
"""

from switch.core.currencies import CURRENCIES

# Card acquirers whose host link the embedded default MACs: name -> (mac,
# mac_key).  default() sets them on the acquirer and gives its simulator
# ``--mac``, with the security section: the zone MAC keys are in the
# sandbox's key store, so DEFAULT_TOML on its own (a file, no security
# module) stays a valid configuration without them.
HOST_MACS = {"bank-a": ("tdes-retail", "zak-bank-a")}

# Spec 6.1: "The demo merchant refunds at most 1000.00 (100000 minor units) at
# once", whatever currency a newcomer's client puts in field 49.  A limit is in
# one currency (switch.core.refunds: a currency it does not name answers 12), so
# the demo merchants name every one, each apart.
DEMO_REFUND_MAX = 100000
DEMO_REFUND_LIMITS = "{ " + ", ".join(f'"{c}" = {DEMO_REFUND_MAX}' for c in sorted(CURRENCIES)) + " }"

DEFAULT_TOML = f"""
# The sandbox of spec 7: its public demo keys are accepted here and nowhere else.
sandbox = true
response_timeout = 60.0

[[listeners]]
host = "0.0.0.0"
port = 8583

# Spec section 7 (v1.1): terminals whose library sends hex-text bitmaps
# (pyiso8583's default_ascii) try the sandbox here.
[[listeners]]
host = "0.0.0.0"
port = 8584
dialect = "iso87-ascii"

[http]
host = "127.0.0.1"
port = 9583

[journal]
url = "sqlite://payswitch-journal.sqlite"

[[merchants]]
id = "DEMO00000000001"
name = "payswitch demo shop"
terminals = ["DEMO0001-DEMO0999"]
# 100000 minor units at once (spec section 6.1), in every currency.
refund_max = {DEMO_REFUND_LIMITS}

# Spec section 7 (v1.1): terminals with the security of section 8 (MAC and PIN
# under public sandbox keys); its policy and keys are added by default().
[[merchants]]
id = "DEMOSEC00000001"
name = "payswitch demo shop (secured terminals)"
terminals = ["SEC00001-SEC00299"]
refund_max = {DEMO_REFUND_LIMITS}

[[acquirers]]
name = "bank-a"
type = "card"
endpoints = ["127.0.0.1:9101"]
timeout = 10.0
acquirer_id = "10000000001"

[[acquirers]]
name = "bank-b"
type = "card"
endpoints = ["127.0.0.1:9102"]
timeout = 10.0
acquirer_id = "10000000002"

[[acquirers]]
name = "cup"
type = "card"
endpoints = ["127.0.0.1:9103"]
timeout = 10.0
acquirer_id = "10000000062"

[[acquirers]]
name = "citycard"
type = "citycard"
endpoints = ["127.0.0.1:9301"]
timeout = 10.0
connections = 1

[[acquirers]]
name = "wallet-a"
type = "wallet-tradepay"
endpoints = ["http://127.0.0.1:9201"]
timeout = 45.0
merchant_key_file = "sandbox-keys/wallet-tradepay/merchant_private.pem"
wallet_public_key_file = "sandbox-keys/wallet-tradepay/wallet_public.pem"

[[acquirers]]
name = "wallet-b"
type = "wallet-micropay"
endpoints = ["http://127.0.0.1:9202"]
timeout = 45.0
secret_file = "sandbox-keys/wallet-micropay/micropay_secret"

[[routes]]
name = "wallet-a"
kind = "wallet"
prefixes = ["25-30"]
acquirers = ["wallet-a"]

[[routes]]
name = "wallet-b"
kind = "wallet"
prefixes = ["10-15"]
acquirers = ["wallet-b"]

[[routes]]
name = "unionpay-qr"
kind = "wallet"
prefixes = ["62"]
acquirers = ["cup"]

[[routes]]
name = "citycard"
kind = "citycard"
prefixes = ["8800"]
acquirers = ["citycard"]

[[routes]]
name = "visa"
kind = "card"
prefixes = ["4"]
acquirers = ["bank-a"]

[[routes]]
name = "mastercard"
kind = "card"
prefixes = ["5", "2"]
acquirers = ["bank-b"]

[[routes]]
name = "unionpay"
kind = "card"
prefixes = ["62"]
acquirers = ["cup"]

[[simulators]]
kind = "acquirer"
name = "bank-a"
port = 9101

[[simulators]]
kind = "acquirer"
name = "bank-b"
port = 9102

[[simulators]]
kind = "acquirer"
name = "cup"
port = 9103

[[simulators]]
kind = "citycard"
name = "citycard"
port = 9301

[[simulators]]
kind = "wallet"
name = "wallet-a"
port = 9201
args = ["--style", "tradepay"]

[[simulators]]
kind = "wallet"
name = "wallet-b"
port = 9202
args = ["--style", "micropay"]

# Value-added services (docs/value-added-services.md): the loyalty sandbox
# for the demo merchant, within 50 ms of each payment moment.
[[simulators]]
kind = "loyalty"
name = "loyalty"
port = 9401

[[vas]]
name = "loyalty"
type = "http"
url = "http://127.0.0.1:9401"
secret_file = "sandbox-keys/loyalty/secret"
merchants = ["DEMO00000000001"]
deadline = 0.05
"""
