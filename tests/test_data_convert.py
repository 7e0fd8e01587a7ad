"""Video-folder / CSV converter: real mp4 (h264) and webm (vp8) files encoded with PyAV, fps
resampling, short-side resizing, a corrupt video reported and skipped, then read by the pipeline."""
import os

import numpy as np
import pytest

from autox3d_jax.data import convert, pipeline, records, testing

T, H, W = 16, 48, 64


def _moving_bar(offset=0):
  frames = np.full((T, H, W, 3), 40, np.uint8)
  for t in range(T):
    x = (3 * t + offset) % (W - 8)
    frames[t, :, x:x + 8] = (230, 200, 40)
  return frames


@pytest.fixture(scope="module")
def video_dir(tmp_path_factory):
  root = tmp_path_factory.mktemp("videos")
  for cls, ext in (("bar_mp4", ".mp4"), ("bar_webm", ".webm")):
    os.makedirs(root / cls)
    for i in range(2):
      testing.encode_video(str(root / cls / f"clip{i}{ext}"), _moving_bar(7 * i), fps=10)
  (root / "bar_webm" / "broken.webm").write_bytes(b"\x1a\x45\xdf\xa3" + b"\x00garbage" * 200)
  (root / "bar_mp4" / "notes.txt").write_text("not a video")
  return str(root)


@pytest.mark.parametrize("ext", [".mp4", ".webm"])
def test_decode_native_resampled_and_resized(video_dir, ext):
  path = os.path.join(video_dir, "bar_mp4" if ext == ".mp4" else "bar_webm", "clip0" + ext)
  native = convert.decode_video(path)
  assert (len(native.frames), native.height, native.width) == (T, H, W)
  assert native.fps == pytest.approx(10.0)
  half = convert.decode_video(path, convert.DecodeOptions(fps=5, short_side=24))
  assert len(half.frames) == T // 2 and (half.height, half.width) == (24, 32) and half.fps == 5
  double = convert.decode_video(path, convert.DecodeOptions(fps=20, max_frames=20))
  assert len(double.frames) == 20
  capped = convert.decode_video(path, convert.DecodeOptions(max_frames=5))
  assert len(capped.frames) == 5
  # The content survives: the bar moves right by 3 px per source frame.
  from PIL import Image
  import io

  def bar_x(jpeg):
    img = np.asarray(Image.open(io.BytesIO(jpeg))).astype(np.float32)
    bar = img[..., 0].mean(0) - img[..., 2].mean(0)  # the yellow bar: much more red than blue
    return float(np.flatnonzero(bar > 80).mean())

  xs = [bar_x(f) for f in native.frames[:8]]
  assert np.diff(xs) == pytest.approx(3, abs=1)


def test_convert_folder_skips_and_reports_corrupt_video(video_dir, tmp_path):
  items, classes = convert.list_videos_folder(video_dir)
  assert classes == ["bar_mp4", "bar_webm"] and len(items) == 5          # notes.txt ignored
  out = str(tmp_path / "bars")
  meta = convert.convert(items, classes, out, split="train", workers=2, progress=True,
                         options=convert.DecodeOptions(fps=10, short_side=32), num_shards=2)
  split = meta.splits["train"]
  assert split.num_examples == 4 and len(split.failed) == 1
  assert split.failed[0]["path"].endswith("broken.webm") and split.failed[0]["error"]
  assert meta.flip_invariant and records.DatasetMeta.load(out) == meta
  protos = list(records.iter_clip_protos([os.path.join(out, f) for f in split.files]))
  assert sorted(p["video_id"] for p in protos) == ["bar_mp4/clip0", "bar_mp4/clip1", "bar_webm/clip0",
                                                   "bar_webm/clip1"]
  assert all(p["height"] == 32 and p["width"] == 43 and len(p["frames"]) == T for p in protos)
  assert {p["label_name"]: p["label"] for p in protos} == {"bar_mp4": 0, "bar_webm": 1}
  # ... and the pipeline reads it (name = folder name under data_dir).
  p = pipeline.make_eval_pipeline("bars", split="train", data_dir=str(tmp_path), batch_size=2, num_frames=8,
                                  crop_size=32, num_temporal_views=2, num_spatial_crops=3, process_index=0,
                                  process_count=1)
  b = next(p.as_numpy_iterator())
  assert b["video"].shape == (2, 6, 8, 32, 32, 3)
  assert not np.allclose(b["video"][0, 0], b["video"][0, 2])   # left vs right crop of a 32x43 frame


def test_convert_csv_and_cli(video_dir, tmp_path):
  csv_path = tmp_path / "train.csv"
  rows = ["path,label", f"{video_dir}/bar_mp4/clip0.mp4,push", f"{video_dir}/bar_webm/clip1.webm,pull",
          f"{video_dir}/bar_webm/broken.webm,pull"]
  csv_path.write_text("\n".join(rows) + "\n")
  out = str(tmp_path / "ssv2_like")
  rc = convert.main(["--csv", str(csv_path), "--output", out, "--split", "train", "--fps", "5", "--short_side",
                     "24", "--workers", "1", "--no_progress"])
  assert rc == 0
  meta = records.DatasetMeta.load(out)
  assert meta.class_names == ["pull", "push"] and meta.flip_invariant is False   # CSV default: not flip-safe
  assert meta.splits["train"].num_examples == 2 and len(meta.splits["train"].failed) == 1
  protos = list(records.iter_clip_protos([os.path.join(out, f) for f in meta.splits["train"].files]))
  assert [len(p["frames"]) for p in protos] == [8, 8] and protos[0]["fps"] == 5.0
  with pytest.raises(SystemExit) as e:
    convert.main(["--help"])
  assert e.value.code == 0


def test_split_list_and_class_names_file(video_dir, tmp_path):
  lst = tmp_path / "trainlist.txt"
  lst.write_text("bar_mp4/clip1.mp4 1\nbar_webm/clip0.webm 2\n")
  items, classes = convert.list_videos_folder(video_dir, only=convert.read_split_list(str(lst)))
  assert [it.video_id for it in items] == ["bar_mp4/clip1", "bar_webm/clip0"]
  with pytest.raises(ValueError, match="not in the class names"):
    convert.list_videos_folder(video_dir, class_names=["bar_mp4"])


def test_cli_errors_are_one_line_and_write_nothing(video_dir, tmp_path, capsys):
  """Every video failing exits non-zero and leaves no empty split; --videos naming a file, an empty
  folder and a missing CSV each get one line naming the input."""
  broken = tmp_path / "broken_only"
  os.makedirs(broken / "cls")
  (broken / "cls" / "a.webm").write_bytes(b"\x1a\x45\xdf\xa3" + b"\x00garbage" * 200)
  out = tmp_path / "out"
  assert convert.main(["--videos", str(broken), "--output", str(out), "--workers", "1", "--no_progress"]) == 2
  err = capsys.readouterr().err.strip().splitlines()
  assert err[-1].startswith("error: none of the 1 videos could be decoded (first: ") and "nothing written" in err[-1]
  assert not records.has_meta(str(out)) and not [f for f in os.listdir(out) if ".tfrecord" in f]

  a_file = os.path.join(video_dir, "bar_mp4", "clip0.mp4")
  assert convert.main(["--videos", a_file, "--output", str(out), "--no_progress"]) == 2
  assert f"--videos {a_file} is a file" in capsys.readouterr().err
  os.makedirs(tmp_path / "empty")
  assert convert.main(["--videos", str(tmp_path / "empty"), "--output", str(out), "--no_progress"]) == 2
  assert "no videos" in capsys.readouterr().err
  assert convert.main(["--csv", str(tmp_path / "missing.csv"), "--output", str(out), "--no_progress"]) == 2
  assert "missing.csv" in capsys.readouterr().err


def test_help_states_each_default_once(capsys):
  with pytest.raises(SystemExit):
    convert.main(["--help"])
  text = " ".join(capsys.readouterr().out.split())
  assert "(default: None)" not in text and text.count("default: 64") == 1 and "(default: 90)" in text
