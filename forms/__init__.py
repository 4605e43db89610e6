"""Form templates: field specs, validators and cross-field rules."""
