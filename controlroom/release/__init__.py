"""The release engine: the rules that allow or refuse every command (and, as the engine
grows, its state machine, actions, clocks, escalation and the journal stores)."""
