"""Templates and field specs, validators, record assembly, exports."""
