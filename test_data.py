"""data.py: MNIST read, checked and held on the device, and the augmentation; and the tiny MNIST,
written here in the IDX format, on which the other scripts' tests train (`TinyData`). A test on the
real data set runs only where $MNIST_DIR holds it (.ci/run sets it); none downloads."""
import contextlib
import io
import json
import os
import shutil
import sys
import tempfile
import unittest
import unittest.mock
from pathlib import Path

import torch

import data
import train

HERE = Path(__file__).resolve().parent
REAL = data.raw_folder(os.environ.get("MNIST_DIR") or "no MNIST_DIR")   # the real data, if any


def write_tiny_mnist(root, n_train=320, n_test=160):
    """Write the four MNIST files under root/MNIST/raw: digit-sized images whose label sets how
    many pixel rows are lit, so a model can learn something in a few steps."""
    raw = Path(root) / "MNIST" / "raw"
    raw.mkdir(parents=True)
    generator = torch.Generator().manual_seed(0)
    for prefix, n in (("train", n_train), ("t10k", n_test)):
        labels = torch.randint(0, 10, (n,), generator=generator, dtype=torch.uint8)
        images = torch.randint(0, 60, (n, 28, 28), generator=generator, dtype=torch.uint8)
        for i, label in enumerate(labels.tolist()):
            images[i, 4:6 + 2 * label, 10:18] = 255
        write_idx(raw / f"{prefix}-images-idx3-ubyte", images)
        write_idx(raw / f"{prefix}-labels-idx1-ubyte", labels)
    return raw


def write_idx(path, tensor):
    """A uint8 tensor as an IDX file: magic 0x08 (bytes) and its dimensions, then the bytes."""
    header = bytes([0, 0, 8, tensor.dim()]) + b"".join(d.to_bytes(4, "big") for d in tensor.shape)
    Path(path).write_bytes(header + tensor.numpy().tobytes())


def run_main(argv, main=train.main):
    """A script's main in this process: (exit status, stdout, stderr). sys.exit's message is
    printed as the interpreter prints it, with status 1."""
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            code = main(argv)
        except SystemExit as e:
            code = e.code
            if isinstance(code, str):
                print(code, file=sys.stderr)
                code = 1
    return code, out.getvalue(), err.getvalue()


def strict_json(path):
    """The file's JSON, refusing the bare NaN and Infinity tokens that strict readers reject."""
    def refuse(token):
        raise ValueError(f"{path} holds {token}")
    return json.loads(Path(path).read_text(), parse_constant=refuse)


class TinyData(unittest.TestCase):
    """A test with the tiny MNIST in a temporary folder, and train.py's flags for it."""

    def setUp(self):
        self.tmp = Path(tempfile.mkdtemp())
        self.raw = write_tiny_mnist(self.tmp / "data")

    def tearDown(self):
        shutil.rmtree(self.tmp)

    def args(self, *extra):
        return ["--model", "3", "--epochs", "2", "--data-dir", str(self.tmp / "data"), *extra]

    def assert_one_line(self, code, err, status):
        self.assertEqual(code, status, err)
        self.assertEqual(len(err.strip().splitlines()), 1, err)
        self.assertNotIn("Traceback", err)

    def assert_refused(self, extra, words="error:", status=2):
        """Refused before training: the status, one line on stderr, nothing on stdout."""
        code, out, err = run_main(self.args(*extra))
        self.assert_one_line(code, err, status)
        self.assertNotIn("EPOCH", out)
        self.assertIn(words, err)
        return err

    def temporary_files(self):
        return [p.name for p in self.tmp.rglob("*.tmp")]


class TestData(TinyData):
    def test_rotation_turns_each_image_within_its_range_on_a_black_background(self):
        pixels = torch.zeros(64, 1, 28, 28)
        pixels[:, :, 4:24, 13:15] = 1.0    # a vertical bar, 20 px long, through the centre
        rotated = data.random_rotation(pixels, 7.0, torch.Generator().manual_seed(0))
        turned = (rotated != pixels).flatten(1).any(dim=1)
        self.assertGreater(turned.sum().item(), 32)          # most images are turned ...
        self.assertGreater(len(torch.unique(rotated.flatten(1), dim=0)), 8)  # ... each its own way
        # At 7 degrees the bar's ends move at most 10 * sin(7) = 1.2 px sideways, so columns
        # far from it stay background; at 45 degrees they do not.
        far = lambda x: torch.cat([x[..., :10], x[..., 18:]], dim=-1).abs().max().item()
        self.assertEqual(far(rotated), 0.0)
        self.assertGreater(far(data.random_rotation(pixels, 45, torch.Generator().manual_seed(0))),
                           0.5)
        unrotated = data.random_rotation(pixels, 0.0, torch.Generator().manual_seed(0))
        torch.testing.assert_close(unrotated, pixels, atol=1e-5, rtol=0)

    def test_shift_moves_each_image_within_its_range_and_brings_in_background(self):
        point = torch.zeros(256, 1, 28, 28)
        point[:, :, 14, 14] = 1.0
        shifted = data.random_rotation(point, 0.0, torch.Generator().manual_seed(0), max_shift=2.0)
        self.assertTrue(torch.equal(shifted.flatten(1).sum(dim=1), torch.ones(256)))   # not blurred
        where = shifted.flatten(1).argmax(dim=1)
        rows, columns = where // 28 - 14, where % 28 - 14
        for offsets in (rows, columns):
            self.assertLessEqual(offsets.abs().max().item(), 2)        # no farther than it says ...
            self.assertEqual(set(offsets.tolist()), {-2, -1, 0, 1, 2})  # ... and every way up to it
        white = torch.ones(256, 1, 28, 28)
        moved_in = data.random_rotation(white, 0.0, torch.Generator().manual_seed(0), max_shift=2.0)
        self.assertTrue(torch.equal(moved_in[..., 2:26, 2:26], white[..., 2:26, 2:26]))
        self.assertEqual(moved_in.unique().tolist(), [0.0, 1.0])        # what enters is background

    def test_rotation_without_shift_draws_what_it_always_drew(self):
        """A run without --shift repeats the committed runs: one random angle per image, no more."""
        used, alone = torch.Generator().manual_seed(3), torch.Generator().manual_seed(3)
        data.random_rotation(torch.zeros(50, 1, 28, 28), 7.0, used)
        torch.rand(50, generator=alone)
        self.assertTrue(torch.equal(used.get_state(), alone.get_state()))

    def test_train_batches_cover_the_split_once_in_a_seeded_order(self):
        labels = torch.arange(100)
        pixels = torch.zeros(100, 1, 28, 28)
        def order(seed):
            batches = data.train_batches(pixels, labels, 32, torch.Generator().manual_seed(seed))
            return torch.cat([y for _, y in batches])
        self.assertEqual(sorted(order(1).tolist()), list(range(100)))
        self.assertTrue(torch.equal(order(1), order(1)))
        self.assertFalse(torch.equal(order(1), order(2)))

    @unittest.skipUnless(all((REAL / name).is_file() for name in data.RAW_FILES),
                         f"no MNIST in {REAL}: set MNIST_DIR to the folder of MNIST/raw")
    def test_real_mnist_loads_and_normalizes(self):
        (train_pixels, train_labels), (_, test_labels) = data.load_splits(REAL)
        self.assertEqual(tuple(train_pixels.shape), (60000, 1, 28, 28))
        self.assertEqual(len(test_labels), 10000)
        self.assertEqual(train_labels.unique().tolist(), list(range(10)))
        normalized = data.normalize(train_pixels)
        self.assertAlmostEqual(normalized.mean().item(), 0.0, delta=0.01)
        self.assertAlmostEqual(normalized.std().item(), 1.0, delta=0.01)

    def test_missing_data_that_cannot_be_downloaded_exits_1_naming_the_folder_and_files(self):
        empty = self.tmp / "empty"
        (self.raw / "t10k-labels-idx1-ubyte").unlink()
        for folder, words in ((empty, "MNIST is not in"), (self.tmp / "data", "t10k-labels-idx1"
                                                           "-ubyte of MNIST are not in")):
            with unittest.mock.patch.object(data.datasets, "MNIST", side_effect=OSError("offline")):
                code, _, err = run_main(["--data-dir", str(folder), "--dry-run"])
            self.assert_one_line(code, err, 1)
            self.assertIn(f"{words} {folder / 'MNIST' / 'raw'}", err)
        self.assertFalse(empty.exists())   # the folders the download made are gone with it

    def test_data_files_that_are_wrong_inside_exit_1_naming_the_file(self):
        files = {name: (self.raw / name).read_bytes() for name in data.RAW_FILES}
        train_images, train_labels, test_images, test_labels = (self.raw / name
                                                                for name in data.RAW_FILES)
        images, labels = files[data.RAW_FILES[2]], files[data.RAW_FILES[3]]   # the test set's
        labels_of = lambda value: labels[:8] + bytes([value]) * (len(labels) - 8)
        images_of = lambda n, rows, columns: (bytes([0, 0, 8, 3]) + b"".join(
            d.to_bytes(4, "big") for d in (n, rows, columns)) + bytes(n * rows * columns))
        test_set = torch.frombuffer(bytearray(images[16:]), dtype=torch.uint8).view(-1, 28, 28)
        write_idx(self.tmp / "superset", torch.cat([torch.zeros(200, 28, 28, dtype=torch.uint8),
                                                    test_set]))
        write_idx(self.tmp / "superset-labels", torch.zeros(200 + len(test_set), dtype=torch.uint8))
        for replaced, named in (   # the files replaced, with what; the file the line must name
            ({test_labels: labels_of(255)}, test_labels),
            ({test_labels: labels[:-5]}, test_labels),   # truncated
            ({train_images: images}, train_labels),   # the test images in its place
            ({train_labels: labels}, train_labels),   # the test labels in its place
            ({train_images: images_of(320, 14, 56)}, train_images),
            ({test_labels: images}, test_labels),   # images where labels belong
            ({test_images: images_of(0, 28, 28), test_labels: labels[:4] + bytes(4)}, test_images),
            ({train_images: images, train_labels: labels}, train_images),
            ({train_images: (self.tmp / "superset").read_bytes(),
              train_labels: (self.tmp / "superset-labels").read_bytes()}, train_images),
        ):
            with self.subTest(files=[p.name for p in replaced], named=named.name):
                for name, original in files.items():
                    (self.raw / name).write_bytes(original)
                for path, contents in replaced.items():
                    path.write_bytes(contents)
                code, out, err = run_main(self.args("--dry-run"))
                self.assert_one_line(code, err, 1)
                self.assertIn(str(named), err)
                self.assertNotIn("EPOCH", out)
        self.assertIn(f"holds 160 of the 160 test images of {test_images.name}", err)

    def test_a_data_file_that_cannot_be_read_exits_1_naming_it(self):
        labels = self.raw / "train-labels-idx1-ubyte"
        real_open = open
        def refuse(path, *args, **kwargs):
            if Path(path) == labels:
                raise PermissionError(13, "Permission denied", str(path))
            return real_open(path, *args, **kwargs)
        with unittest.mock.patch("builtins.open", refuse):
            code, out, err = run_main(self.args("--dry-run"))
        self.assert_one_line(code, err, 1)
        self.assertIn(str(labels), err)
        self.assertIn("Permission denied", err)

    def test_the_data_are_the_checked_raw_files_whatever_else_the_folder_holds(self):
        processed = self.raw.parent / "processed"   # torchvision's legacy files, of other data
        processed.mkdir()
        for name in ("training.pt", "test.pt"):
            torch.save((torch.zeros(7, 28, 28, dtype=torch.uint8), torch.zeros(7).long()),
                       processed / name)
        for data_dir in (self.tmp / "data", self.raw):   # the folder of MNIST/raw, or that folder
            with self.subTest(data_dir=data_dir):
                metrics = self.tmp / "m.json"
                code, _, err = run_main(["--model", "1", "--epochs", "1", "--data-dir",
                                         str(data_dir), "--metrics", str(metrics)])
                self.assertEqual(code, 0, err)
                self.assertEqual(strict_json(metrics)["epochs"][0]["test_total"], 160)
        self.assertEqual(sorted(p.name for p in self.raw.parent.iterdir()), ["processed", "raw"])

    def test_a_data_folder_under_the_home_tilde_is_found(self):
        with unittest.mock.patch.dict(os.environ, {"HOME": str(self.tmp), "MNIST_DIR": "~/data"}):
            for argv in (["--data-dir", "~/data"], []):
                with self.subTest(argv=argv):
                    code, out, err = run_main(["--dry-run", "--epochs", "1", *argv])
                    self.assertEqual(code, 0, err)
                    self.assertIn("EPOCH: 0", out)
        self.assertFalse((Path.cwd() / "~").exists())

