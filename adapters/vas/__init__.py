"""Value-added service clients registered under the entry points ``payswitch.vas`` (the bundled ``http``)."""
