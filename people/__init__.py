"""People: worker and staff accounts, invites, PINs, access codes and sign-in limits."""
