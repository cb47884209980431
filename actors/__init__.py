"""The write side: pure domain modules and the Ray actors that wrap them (later issues)."""
