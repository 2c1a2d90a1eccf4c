"""Service: cases on configured state machines (crm.service.cases) with SLAs (crm.service.sla), surveys and
satisfaction (crm.service.surveys), feedback classification (crm.service.feedback) and statistics
(crm.service.stats). Rules come from config/service.toml (crm.service.config)."""
