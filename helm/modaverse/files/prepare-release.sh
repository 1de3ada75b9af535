# Fills the model claim with the ModaVerse release in the layout the chart reads (the release.prepare Job;
# docs/deploy.md, "Preparing the release's files"). POSIX sh; every parameter comes from the environment:
#   PREPARE_ROOT               convert-release's output root (release.root)
#   PREPARE_IMAGEBIND          the ImageBind checkpoint file, PREPARE_IMAGEBIND_URL where to download it from
#   PREPARE_VICUNA_DIR         apply-delta's output (Vicuna-7B v0)
#   PREPARE_<SRC>_{REPO,REVISION,DIR,INCLUDE} for SRC in RELEASE (ModaVerse-7b-v0), LLAMA, DELTA
#   PREPARE_VERIFY             "true": run `modaverse-llm verify-release` last
# Each step is skipped when its output exists, so the Job is safe to re-run; every writer here (hf download,
# apply-delta, convert-release, the checkpoint download) puts its output in place whole, at the end.
set -eu
set -f  # --include patterns stay patterns

log() { printf 'prepare-release: %s\n' "$*"; }

# fetch NAME REPO REVISION DIR SENTINEL INCLUDE: `hf download REPO --local-dir DIR` unless DIR already holds it.
# DIR holds it when an earlier run finished (the marker), or when it has SENTINEL and no hf download metadata
# (a copy put on the claim by hand); a folder with metadata and no marker is an interrupted download: resumed.
fetch() {
  name=$1 repo=$2 revision=$3 dir=$4 sentinel=$5 include=$6
  if [ -e "$dir/.modaverse-fetched" ]; then
    log "$name: $dir already fetched"
    return 0
  fi
  if [ -e "$dir/$sentinel" ] && [ ! -d "$dir/.cache/huggingface" ]; then
    log "$name: using $dir (already on the claim)"
    return 0
  fi
  if [ -z "$repo" ]; then
    log "$name: no $sentinel in $dir and no repo to fetch it from"
    exit 1
  fi
  set -- download "$repo" --local-dir "$dir"
  if [ -n "$revision" ]; then set -- "$@" --revision "$revision"; fi
  for pattern in $include; do set -- "$@" --include "$pattern"; done
  log "$name: hf $*"
  HF_HUB_OFFLINE=0 hf "$@"
  if [ ! -e "$dir/$sentinel" ]; then
    log "$name: $repo has no $sentinel"
    exit 1
  fi
  touch "$dir/.modaverse-fetched"
}

converted=no
if [ -e "$PREPARE_ROOT" ]; then converted=yes; fi
vicuna=no
if [ -e "$PREPARE_VICUNA_DIR" ]; then vicuna=yes; fi

# 1. Sources (only what the missing outputs need).
if [ "$converted" = yes ]; then
  log "$PREPARE_ROOT exists: sources, apply-delta and convert-release skipped"
else
  fetch ModaVerse-7b-v0 "$PREPARE_RELEASE_REPO" "$PREPARE_RELEASE_REVISION" "$PREPARE_RELEASE_DIR" \
    pytorch_model.pt "$PREPARE_RELEASE_INCLUDE"
  if [ "$vicuna" = yes ]; then
    log "$PREPARE_VICUNA_DIR exists: LLaMA-7B, the Vicuna delta and apply-delta skipped"
  else
    fetch LLaMA-7B "$PREPARE_LLAMA_REPO" "$PREPARE_LLAMA_REVISION" "$PREPARE_LLAMA_DIR" \
      config.json "$PREPARE_LLAMA_INCLUDE"
    fetch vicuna-7b-delta-v0 "$PREPARE_DELTA_REPO" "$PREPARE_DELTA_REVISION" "$PREPARE_DELTA_DIR" \
      config.json "$PREPARE_DELTA_INCLUDE"
  fi
fi

# 2. The ImageBind checkpoint: downloaded beside it (resumed after an interruption), then renamed into place.
if [ -s "$PREPARE_IMAGEBIND" ]; then
  log "$PREPARE_IMAGEBIND exists"
else
  log "downloading $PREPARE_IMAGEBIND_URL -> $PREPARE_IMAGEBIND"
  "$(command -v python3 || command -v python)" - "$PREPARE_IMAGEBIND_URL" "$PREPARE_IMAGEBIND" <<'PY'
import os, shutil, sys, urllib.error, urllib.request

url, dest = sys.argv[1], sys.argv[2]
part = dest + ".partial"
os.makedirs(os.path.dirname(dest), exist_ok=True)
have = os.path.getsize(part) if os.path.exists(part) else 0
request = urllib.request.Request(url, headers={"Range": f"bytes={have}-"} if have else {})
try:
    with urllib.request.urlopen(request, timeout=60) as response:
        resume = have > 0 and getattr(response, "status", None) == 206
        with open(part, "ab" if resume else "wb") as out:
            shutil.copyfileobj(response, out, 1 << 20)
except urllib.error.HTTPError as err:
    if err.code != 416:  # 416: the partial file is already whole
        raise
os.replace(part, dest)
PY
fi

# 3. Vicuna-7B v0 = LLaMA-7B + delta.
if [ "$converted" = no ] && [ "$vicuna" = no ]; then
  modaverse-llm apply-delta --base "$PREPARE_LLAMA_DIR" --delta "$PREPARE_DELTA_DIR" --out "$PREPARE_VICUNA_DIR"
fi

# 4. The release on Vicuna: <root>/base, <root>/adapters/default, <root>/adaptor.
if [ "$converted" = no ]; then
  modaverse-llm convert-release --release "$PREPARE_RELEASE_DIR" --base "$PREPARE_VICUNA_DIR" --out "$PREPARE_ROOT"
fi

# 5. Check it: loads the converted folder and runs one prompt.
if [ "$PREPARE_VERIFY" = true ]; then
  modaverse-llm verify-release "$PREPARE_ROOT"
fi
log "done: $PREPARE_ROOT"
