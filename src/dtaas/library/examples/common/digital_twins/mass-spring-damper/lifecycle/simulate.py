"""A damped mass on a spring, one semi-implicit Euler step at a time.

State is (step, x, v); time is step * time_step, so a restored run computes exactly the
values an uninterrupted run would have. On a save request (a file in the state folder)
the state is written atomically to state.json. Each step is published as telemetry when
the platform gives an MQTT broker; at the end the trajectory is plotted as an SVG.
"""

import json
import os
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from plot import write_plot  # noqa: E402  # beside this script, not installed
from telemetry import Publisher  # noqa: E402

params = json.loads(Path(os.environ.get("DTAAS_PARAMS_FILE", "params.json")).read_text())
state_dir = Path(os.environ.get("DTAAS_STATE_DIR", ".dtaas-state"))
state_file = state_dir / "state.json"
request = state_dir / "save-request"
mass, stiffness, damping = params["mass"], params["stiffness"], params["damping"]
dt, steps, delay = params["time_step"], params["steps"], params["step_delay"]

state = {"step": 0, "x": params["x0"], "v": params["v0"]}
if os.environ.get("DTAAS_RESTORE") == "1" and state_file.is_file():
    state = json.loads(state_file.read_text())
    print(f"restored at step={state['step']}", flush=True)

results = Path("results")
results.mkdir(exist_ok=True)
csv = results / "trajectory.csv"
if not csv.exists():
    csv.write_text("step,t,x,v\n")

publisher = Publisher()
with csv.open("a") as rows:
    while state["step"] < steps:
        acceleration = (-stiffness * state["x"] - damping * state["v"]) / mass
        state["v"] += acceleration * dt
        state["x"] += state["v"] * dt
        state["step"] += 1
        t = state["step"] * dt
        print(f"step={state['step']} t={t:.4f} x={state['x']!r} v={state['v']!r}", flush=True)
        rows.write(f"{state['step']},{t:.6f},{state['x']!r},{state['v']!r}\n")
        rows.flush()
        publisher.publish({"t": t, "x": state["x"], "v": state["v"]})
        if request.exists():
            partial = state_file.with_suffix(".partial")
            partial.write_text(json.dumps(state))
            partial.replace(state_file)
            request.unlink()
        time.sleep(delay)
publisher.close()
write_plot(csv, results / "trajectory.svg")
print("done", flush=True)
