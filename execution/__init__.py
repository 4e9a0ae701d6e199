"""Trade execution for Google Cloud Functions in which a failed trade never poisons the system."""
