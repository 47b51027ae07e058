"""Developer harnesses that attack the SDK from outside: loader fuzzing and long-run soaks.

``fuzz`` and ``fuzz_targets`` need the ``[test]`` extra (hypothesis; atheris from ``[fuzz]`` is optional). ``soak`` uses
the runtime only, so it runs wherever a bundle runs. Nothing in the package imports this subpackage.
"""
