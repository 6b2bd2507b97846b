"""The file names the steps hand to each other and users open: the one place they are spelled.

A step's output directory is its contract with the next step (and with a person reading a run's
output folder), so every module that reads or writes one of these files imports the name from here.
"""

# Data prep: the dataset directory.
MANIFEST_FILE = "manifest.json"  # splits, sizes, classes, image shape; written last, the commit point
PIXEL_MEAN_FILE = "pixel_mean.npy"  # the train split's per-pixel mean

# Train: the model directory.
MODEL_FILE = "model.keras"  # best epoch by validation accuracy, takes raw uint8-valued images
HISTORY_FILE = "history.csv"  # one row per epoch
TRAIN_RESULT_FILE = "train_result.json"  # written last, the commit point

# Evaluate (and publish, which adds the registry decision): the result directory.
RESULT_FILE = "result.json"
MISTAKES_FILE = "mistakes.npy"  # thumbnails of result["mistakes"], same order
CORRECTNESS_FILE = "correctness.json"  # per-image correct/wrong bits on the test split, for paired tests

# Report: the run's comparison.
REPORT_HTML_FILE = "report.html"
REPORT_MARKDOWN_FILE = "report.md"
SUMMARY_FILE = "summary.json"
REPORT_FILES = (REPORT_HTML_FILE, REPORT_MARKDOWN_FILE, SUMMARY_FILE)

# A local run's output folder: its resolved settings beside the report.
RUN_CONFIG_FILE = "config.json"

# Model store: a test set's and an architecture's pointer to its champion version, each version's
# record of what it was made from (the same file name as the dataset manifest, a different record),
# and the test set a lineage of versions is measured on.
CHAMPION_FILE = "champion.json"
VERSION_RECORD_FILE = "manifest.json"
LINEAGE_FILE = "lineage.json"
