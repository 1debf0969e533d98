"""The thermostat: reads the tank's temperature from RabbitMQ and answers with the heater
command, switching it on below the band around the setpoint and off above it (hysteresis)."""

import json
import os
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from amqp import AmqpError, Connection  # noqa: E402  # beside this script, not installed

# Named after the instance: on a site without a vhost per instance, all instances share one.
INSTANCE = os.environ.get("DTAAS_INSTANCE_ID", "0")
READINGS, COMMANDS = f"tank-{INSTANCE}.temperature", f"tank-{INSTANCE}.heater"


def main():
    params = json.loads(Path(os.environ.get("DTAAS_PARAMS_FILE", "params.json")).read_text())
    run = os.environ.get("DTAAS_JOB_ID", "0")  # messages of an earlier run are skipped
    low = params["setpoint_c"] - params["band_c"] / 2
    high = params["setpoint_c"] + params["band_c"] / 2
    # Between readings the tank waits step_delay; allow that on top of the usual timeout.
    timeout = 30.0 + params["step_delay"]
    heater = False
    with Connection(os.environ["DTAAS_AMQP_URL"], timeout=timeout) as broker:
        broker.declare_queue(READINGS)  # both sides declare both queues: either may start first
        broker.declare_queue(COMMANDS)
        broker.consume(READINGS)
        print(f"thermostat: holding {low:g}-{high:g} °C", flush=True)
        for _ in range(params["steps"]):
            reading = broker.next_message()
            while reading.get("run") != run:
                reading = broker.next_message()  # left over from an earlier run
            temperature = reading["temperature_c"]
            if (temperature < low and not heater) or (temperature > high and heater):
                heater = not heater
                print(
                    f"thermostat: t={reading['time_s']:g} s, {temperature:.2f} °C: "
                    f"heater {'on' if heater else 'off'}",
                    flush=True,
                )
            broker.publish(COMMANDS, {"run": run, "step": reading["step"], "heater": heater})
    print("thermostat: done", flush=True)


if __name__ == "__main__":
    try:
        main()
    except (AmqpError, OSError) as exc:
        sys.exit(f"thermostat: RabbitMQ failed: {exc}")
