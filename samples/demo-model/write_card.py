#!/usr/bin/env python3
"""Writes the demo model's model card (model-card.json, format in README.md)
from the test evaluations that train.sh prints.

usage: write_card.py MODEL_DIR EVALUATIONS

EVALUATIONS has one line per validated label set: a key (pneumoniamnist,
breastmnist, retinamnist, modality) and the JSON object of `unimed evaluate`
on that test split (for modality: on the test splits of the other sets
together). The card lists the label sets of these lines, in the order above.
"""
import json
import os
import sys

# key -> (label set file, question, modalities, test data)
SETS = {
    "pneumoniamnist": ("labelsets/pneumonia.json", "pneumonia or normal on a paediatric chest X-ray",
                       ["CR", "DX"], "PneumoniaMNIST test split"),
    "breastmnist": ("labelsets/breast.json", "malignant or benign/normal on a breast ultrasound",
                    ["US"], "BreastMNIST test split"),
    "retinamnist": ("labelsets/retina.json", "diabetic retinopathy grade 0-4 on a colour fundus photograph",
                    ["OP"], "RetinaMNIST test split"),
    "modality": ("labelsets/modality.json", "chest X-ray, breast ultrasound or fundus photograph",
                 ["CR", "DX", "US", "OP"], "the three test splits together"),
}

DATA = {"pneumoniamnist": "PneumoniaMNIST", "breastmnist": "BreastMNIST", "retinamnist": "RetinaMNIST"}


def main(argv):
    if len(argv) != 3:
        sys.stderr.write(__doc__)
        return 2
    model, evaluations = argv[1:]
    results = {}
    with open(evaluations) as f:
        for line in f:
            key, _, text = line.strip().partition(" ")
            if key:
                results[key] = json.loads(text)
    unknown = [k for k in results if k not in SETS]
    if unknown or not results:
        sys.stderr.write(f"{evaluations}: expected lines of {', '.join(SETS)}; got {', '.join(results) or 'none'}\n")
        return 1
    with open(os.path.join(model, "config.json")) as f:
        config = json.load(f)
    data = [DATA[k] for k in DATA if k in results]
    names = ", ".join(data[:-1]) + " and " + data[-1] if len(data) > 1 else "".join(data)
    sets = []
    for key, (path, question, modalities, data) in SETS.items():
        if key not in results:
            continue
        with open(os.path.join(os.path.dirname(os.path.abspath(__file__)), path)) as f:
            ls = json.load(f)
        r = results[key]
        sets.append({
            "name": ls["name"], "version": ls["version"], "file": path, "question": question,
            "modalities": modalities,
            "test": {"data": data, "n": r["n"], "accuracy": round(r["accuracy"], 6),
                     "balanced_accuracy": round(r["balanced_accuracy"], 6), "auc": round(r["auc"], 6)},
        })
    card = {
        "format": "unimed-model-card/1",
        "name": config.get("model_name", ""),
        "version": config.get("model_version", ""),
        "model_hash": next(iter(results.values()))["model_hash"],
        "intended_use": "Demonstration of UniMed for Orthanc on the project's sample data: zero-shot "
                        "answers to the questions below on small (28 x 28 pixel) images like MedMNIST's. "
                        "NOT FOR CLINICAL USE; its answers mean nothing on other questions, other "
                        "modalities or real-resolution findings.",
        "clinical_use": False,
        "training_data": "MedMNIST v2 (CC BY 4.0), 28 px, train splits of " + names
                         + "; trained from scratch by unimed-train (recipe: README.md)",
        "label_sets": sets,
    }
    with open(os.path.join(model, "model-card.json"), "w") as f:
        json.dump(card, f, indent=1, ensure_ascii=False)
        f.write("\n")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
