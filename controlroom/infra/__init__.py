"""Infrastructure the core shares: process lifetime, and (as they move here) the Postgres
connection factory, HTTP helpers and subprocess handling."""
