"""A centred moving average, as a function and as a script over one CSV column."""

import csv
import sys


def moving_average(values: list[float], window: int) -> list[float]:
    """Average each value with its neighbours; the window shrinks at the ends."""
    if window < 1:
        raise ValueError("window must be at least 1")
    half = window // 2
    result = []
    for index in range(len(values)):
        part = values[max(0, index - half) : index + half + 1]
        result.append(sum(part) / len(part))
    return result


if __name__ == "__main__":
    path, column, window = sys.argv[1], sys.argv[2], int(sys.argv[3])
    with open(path, newline="") as handle:
        series = [float(row[column]) for row in csv.DictReader(handle)]
    for value in moving_average(series, window):
        sys.stdout.write(f"{value:.4f}\n")
