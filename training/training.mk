# Training targets (included by the root Makefile; see docs/training.md).
#   make train-tiny   shapes world -> ImageBind features -> training -> export into the tiny profile's
#                     model dir (so `make demo` and the local stack serve the trained model), and the
#                     results table into docs/training.md. Skipped when an export exists there;
#                     TRAIN_TINY_FLAGS=--force retrains. ~15 min on 2 CPU cores.
TRAIN_TINY_FLAGS ?=
TRAIN_PROGRESS ?= auto

.PHONY: train-tiny tiny-model
train-tiny: protos
	nice -n 10 $(BIN)/modaverse-train tiny --docs docs/training.md $(TRAIN_TINY_FLAGS)

# What `make demo` needs: the trained tiny model in the model dir (cached; the docs are left alone). It shows
# each stage and the time left: one updating line on a terminal, a plain line every 20 s otherwise
# (TRAIN_PROGRESS=off silences it).
tiny-model: protos
	nice -n 10 $(BIN)/modaverse-train tiny --progress $(TRAIN_PROGRESS)
