"""The arena: battles between contestants, the votes log and the ratings computed from it."""
