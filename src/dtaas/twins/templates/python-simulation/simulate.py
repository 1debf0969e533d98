"""Heated tank with a thermostat: integrates the model and writes results/trajectory.csv."""

import csv
import json
import os
import sys
from pathlib import Path

CAPACITY_J_PER_K = 838_000.0
RESISTANCE_K_PER_W = 0.12
ROOM_C = 21.0
DEFAULTS = {"duration_s": 3600, "step_s": 1.0, "heater_power_w": 1500.0, "setpoint_c": 40.0}


def parameters() -> dict:
    values = dict(DEFAULTS)
    params = Path("params.json")
    if params.is_file():
        values.update(json.loads(params.read_text()))
    for name in DEFAULTS:
        env = os.environ.get(f"DTAAS_PARAM_{name.upper()}")
        if env is not None:
            values[name] = float(env)
    return values


def main() -> int:
    p = parameters()
    step, steps = float(p["step_s"]), int(float(p["duration_s"]) / float(p["step_s"]))
    temperature, heater_on = ROOM_C, True
    Path("results").mkdir(exist_ok=True)
    with open("results/trajectory.csv", "w", newline="") as handle:
        out = csv.writer(handle)
        out.writerow(["time_s", "temperature_c", "heater_on"])
        for k in range(steps + 1):
            if k % max(1, int(10 / step)) == 0:
                out.writerow([f"{k * step:.2f}", f"{temperature:.4f}", int(heater_on)])
            heater_on = temperature < float(p["setpoint_c"]) if heater_on else temperature < float(p["setpoint_c"]) - 1.0
            power = float(p["heater_power_w"]) if heater_on else 0.0
            temperature += step * (power - (temperature - ROOM_C) / RESISTANCE_K_PER_W) / CAPACITY_J_PER_K
    sys.stdout.write(f"simulated {steps} steps; final temperature {temperature:.2f} C\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
