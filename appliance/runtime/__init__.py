"""Process wiring: the services, background loops, systemd notification."""
