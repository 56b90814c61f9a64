"""Key figures: the one short line a stage reports about its result (examples ingested, anomalies,
accuracy, blessed or not). The local runner shows it on the stage's progress line, even when the
libraries' logs are quiet."""
import logging

LOGGER_NAME = "image_cnn.key_figure"


def key_figure(text: str) -> None:
    logging.getLogger(LOGGER_NAME).info(text)
