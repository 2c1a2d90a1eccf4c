"""Care: the triggers that write care actions (crm.care.triggers) to the outbox that delivery workers claim
and acknowledge (crm.care.outbox). Rules come from config/service.toml's [care] tables."""
