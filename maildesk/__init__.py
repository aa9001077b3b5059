"""maildesk: an email-centric IT service desk."""
