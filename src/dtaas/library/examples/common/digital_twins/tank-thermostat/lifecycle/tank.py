"""The tank: a lumped thermal model, stepped in time, that takes its heater command from the
thermostat over RabbitMQ.

Each step publishes ``{"run", "step", "time_s", "temperature_c"}`` to the queue
``tank-<instance>.temperature``, waits for the thermostat's ``{"run", "step", "heater"}`` on
``tank-<instance>.heater``, records the row
and then lets the heater (on or off) act for one time step:

    C · dT/dt = P · heater - (T - T_room) / R

solved exactly over the step: T relaxes towards T_room + P · R · heater with the time
constant R · C.
"""

import json
import math
import os
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from amqp import AmqpError, Connection  # noqa: E402  # beside this script, not installed

# Named after the instance: on a site without a vhost per instance, all instances share one.
INSTANCE = os.environ.get("DTAAS_INSTANCE_ID", "0")
READINGS, COMMANDS = f"tank-{INSTANCE}.temperature", f"tank-{INSTANCE}.heater"


def simulate(broker, params, run, rows):
    dt, delay = params["time_step"], params["step_delay"]
    room, power = params["room_temperature_c"], params["heater_power_w"]
    resistance, capacity = params["resistance_k_per_w"], params["capacity_j_per_k"]
    decay = math.exp(-dt / (resistance * capacity))
    temperature = params["initial_temperature_c"]
    for step in range(params["steps"]):
        now = step * dt
        broker.publish(
            READINGS, {"run": run, "step": step, "time_s": now, "temperature_c": temperature}
        )
        command = broker.next_message()
        while command.get("run") != run or command.get("step") != step:
            command = broker.next_message()  # left over from an earlier run
        heater = bool(command["heater"])
        rows.write(f"{now:g},{temperature!r},{int(heater)}\n")
        rows.flush()
        steady = room + power * resistance * heater  # where T would settle
        temperature = steady + (temperature - steady) * decay
        time.sleep(delay)
    return temperature


def main():
    params = json.loads(Path(os.environ.get("DTAAS_PARAMS_FILE", "params.json")).read_text())
    run = os.environ.get("DTAAS_JOB_ID", "0")  # messages of an earlier run are skipped
    hottest = params["room_temperature_c"] + params["heater_power_w"] * params["resistance_k_per_w"]
    if hottest <= params["setpoint_c"] + params["band_c"] / 2:
        print(f"tank: warning: the heater cannot get it above {hottest:.1f} °C", flush=True)
    results = Path("results")
    results.mkdir(exist_ok=True)
    with (
        Connection(os.environ["DTAAS_AMQP_URL"]) as broker,
        (results / "tank.csv").open("w") as rows,
    ):
        print(f"tank: connected to RabbitMQ as {broker.user}, vhost {broker.vhost}", flush=True)
        broker.declare_queue(READINGS)  # both sides declare both queues: either may start first
        broker.declare_queue(COMMANDS)
        broker.consume(COMMANDS)
        rows.write("time_s,temperature_c,heater\n")
        temperature = simulate(broker, params, run, rows)
    print(f"tank: {params['steps']} steps done, {temperature:.2f} °C at the end", flush=True)


if __name__ == "__main__":
    try:
        main()
    except (AmqpError, OSError) as exc:
        sys.exit(f"tank: RabbitMQ failed: {exc}")
