"""Cold start probe: a fresh process that imports, loads and answers one text.

`python -m slimformer.bench.coldstart SPEC_JSON` prints {"import_s", "load_s", "first_answer_s", "label"};
the caller times the whole process from outside (interpreter start included). SPEC_JSON: model, runtime,
threads, options, text, and optionally max_length (None: the model's).
"""

from __future__ import annotations

import json
import sys
import time

if __name__ == "__main__":
    t0 = time.perf_counter()
    from slimformer.runtimes import load_predictor, predictor_class

    spec = json.loads(sys.argv[1])
    predictor_class(spec["runtime"])  # imports the runtime's libraries
    t1 = time.perf_counter()
    options = {**({"max_length": spec["max_length"]} if spec.get("max_length") else {}), **spec["options"]}
    predictor = load_predictor(spec["model"], spec["runtime"], spec["threads"], **options)
    t2 = time.perf_counter()
    label = predictor.predict([spec["text"]])[0]
    t3 = time.perf_counter()
    print(json.dumps({"import_s": t1 - t0, "load_s": t2 - t1, "first_answer_s": t3 - t2, "label": label}))
