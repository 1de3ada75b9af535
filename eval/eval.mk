# Evaluation targets (included by the root Makefile; see docs/eval.md).
#   make eval-tiny    the local tiny stack, then `modaverse eval` on the trained tiny model's test benchmark
#                     (<model dir>/tiny/eval/shapes-test.jsonl, written by `make tiny-model`) into eval-out/tiny,
#                     then the stack stops. Resumable: run it again to finish an interrupted run.
#                     EVAL_TINY_FLAGS="-- --limit 10" passes options to `modaverse eval`.
#   make eval-media   the media files of the starter benchmark (eval/starter.jsonl) into eval/media/
EVAL_TINY_FLAGS ?=
EVAL_TINY_OUT ?= eval-out/tiny

.PHONY: eval-tiny eval-media
eval-tiny: protos tiny-model
	$(PY) eval/run_tiny.py --out $(EVAL_TINY_OUT) $(EVAL_TINY_FLAGS)

eval-media: protos
	$(PY) eval/make_media.py
