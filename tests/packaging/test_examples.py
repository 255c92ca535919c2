"""The example user-data parses strictly: YAML that a lax reader accepts (a key given twice,
where the last silently wins) is refused here."""

import glob
import os
import unittest

import yaml

HERE = os.path.dirname(os.path.abspath(__file__))
EXAMPLES = sorted(glob.glob(os.path.join(HERE, "..", "..", "cloud-init", "examples", "*.yaml")))


class StrictLoader(yaml.SafeLoader):
    def construct_mapping(self, node, deep=False):
        seen = set()
        for key_node, _ in node.value:
            key = self.construct_object(key_node, deep=deep)
            if key in seen:
                raise yaml.constructor.ConstructorError(
                    None, None, "duplicate key %r" % (key,), key_node.start_mark
                )
            seen.add(key)
        return super().construct_mapping(node, deep=deep)


class TestExamples(unittest.TestCase):
    def test_there_are_examples(self):
        self.assertTrue(EXAMPLES)

    def test_no_duplicate_keys_and_the_config_is_written_early(self):
        for path in EXAMPLES:
            with self.subTest(path=os.path.basename(path)):
                with open(path) as f:
                    text = f.read()
                self.assertTrue(text.startswith("#cloud-config\n"))
                data = yaml.load(text, Loader=StrictLoader)
                self.assertNotIn("vaultboot", data)
                entries = [e for e in data["write_files"] if e["path"] == "/etc/vaultboot/config.toml"]
                self.assertEqual(len(entries), 1)
                self.assertEqual(entries[0]["permissions"], "0600")
                self.assertFalse(entries[0].get("defer", False))

    def test_the_strict_loader_refuses_a_repeated_key(self):
        with self.assertRaises(yaml.constructor.ConstructorError):
            yaml.load("write_files: a\nwrite_files: b\n", Loader=StrictLoader)


if __name__ == "__main__":
    unittest.main()
