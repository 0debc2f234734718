"""Configuration checks of the top-level timing keys: each one's range, and
the orders between them that the switch's promises rest on.

Called from :func:`switch.config._check` with its ``fail(path, message)``;
an order names both keys, the one to change in the key path.
"""
from __future__ import annotations

# Seconds that may be 0 (card_retention = 0: the card goes with the answer).
_NOT_NEGATIVE = ("reversal_retry", "reversal_backoff_max", "reversal_not_found_window", "retransmission_window",
                 "drain_timeout", "card_retention")


def check(cfg, fail) -> None:
    for key in _NOT_NEGATIVE:
        if (getattr(cfg, key) or 0) < 0:  # drain_timeout may be unset (None)
            fail(key, f"must be 0 or more, got {getattr(cfg, key)}")
    check_reversal_backoff(cfg, fail)
    check_retransmission_window(cfg, fail)


def check_reversal_backoff(cfg, fail) -> None:
    """The wait between two repeats of a reversal doubles from reversal_retry up to
    reversal_backoff_max: a ceiling below the start would cut the first wait short
    (and at 0, the reversal sender would wake without pause)."""
    if cfg.reversal_backoff_max < cfg.reversal_retry:
        fail("reversal_backoff_max", f"{cfg.reversal_backoff_max} is below reversal_retry ({cfg.reversal_retry}): "
             "the wait between repeats of a reversal doubles from reversal_retry up to reversal_backoff_max")


def check_retransmission_window(cfg, fail) -> None:
    """Spec 6.1: a repeat is answered as its original was or is being answered,
    never authorized twice.  A repeat can come while its original is still being
    answered, up to response_timeout after it: a shorter window would take it
    for a new request and authorize it again."""
    if cfg.retransmission_window < cfg.response_timeout:
        fail("retransmission_window", f"{cfg.retransmission_window} is shorter than response_timeout "
             f"({cfg.response_timeout}): a terminal's repeat of a request still being answered "
             "would be authorized a second time")


def drain_warning(cfg) -> str | None:
    """A stop gives up the acquirer calls still in flight after drain_timeout
    (68 to the terminal, the payment reversed).  A request taken just before
    SIGTERM may be at its acquirer, or its wallet customer still confirming,
    until response_timeout: a shorter drain gives up calls that could still
    be answered.  Allowed (a supervisor's stop timeout may force it), said
    by ``check-config``, at start and at reload."""
    if cfg.drain_timeout is not None and cfg.drain_timeout < cfg.response_timeout:
        return (f"{cfg.source}: drain_timeout {cfg.drain_timeout} is shorter than response_timeout "
                f"({cfg.response_timeout}): on SIGTERM, requests still at their acquirer after "
                f"{cfg.drain_timeout} s are given up (68, reversed) though they could still be answered; "
                "remove the key to drain for response_timeout - at `$.drain_timeout`")
    return None
