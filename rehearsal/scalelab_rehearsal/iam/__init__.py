"""IAM in the rehearsal: every call a function or the state machine makes is authorized
against its role as the deployed template gives it, by AWS's own rules and data."""
