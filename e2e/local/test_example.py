"""The order-inventory example (examples/order-inventory) runs with its injected faults and ends
consistent: every order is deducted from inventory exactly once, and nothing else is."""
import os
import subprocess

from conftest import BIN, PYTHON, ROOT


def test_order_inventory_example_stays_consistent_through_crashes():
    p = subprocess.run([PYTHON, str(ROOT / "examples" / "order-inventory" / "run.py")], capture_output=True, text=True,
                       timeout=900, env={**os.environ, "FERROCKET_BIN": str(BIN)})
    assert p.returncode == 0, f"{p.stdout[-4000:]}\n{p.stderr[-4000:]}"
    assert p.stdout.splitlines()[-1] == "consistent"
