"""Infrastructure the core shares: process lifetime, operator identity, the Postgres
connection factory (`pg`), and (as they move here) HTTP helpers and subprocess handling."""
