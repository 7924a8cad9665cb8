"""The sandbox: a simulated POS platform with a real Postgres and a real HTTP server."""
