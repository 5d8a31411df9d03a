"""lpfs.formats.modfile: module files, their defaults and their error messages."""

import pytest

from lpfs.errors import ModfileError
from lpfs.formats.modfile import load, parse
from lpfs.kernel.structs import (
    AttrDef,
    FuncDef,
    KobjectDef,
    KprobeDef,
    ModuleDef,
    ObjectDef,
    ParamDef,
    ParamText,
    PendingCallers,
    ProcDef,
    StateDef,
)

ONE_FUNC = """
name = "demo"

[[object]]
[[object.func]]
old_name = "cmdline_proc_show"
new_name = "livepatch_cmdline_proc_show"
"""


def error(text, file="demo.toml") -> str:
    """The message of the ModfileError that parsing ``text`` raises."""
    with pytest.raises(ModfileError) as info:
        parse(text, file)
    return str(info.value)


class TestParse:
    """What a valid module file turns into."""

    def test_defaults(self):
        """Objects default to vmlinux, sympos to 0, livepatch to true and replace to false."""
        expected = ModuleDef(
            name="demo",
            livepatch=True,
            replace=False,
            objects=(
                ObjectDef(
                    "vmlinux", (FuncDef("cmdline_proc_show", "livepatch_cmdline_proc_show"),)
                ),
            ),
            source="demo.toml",
        )

        assert expected == parse(ONE_FUNC, "demo.toml")

    def test_every_key(self):
        """Every documented key is read."""
        text = """
            format = 1
            name = "demo"
            livepatch = true
            replace = true
            [[object]]
            name = "test_klp_mod"
            [[object.func]]
            old_name = "mod_func"
            new_name = "livepatch_mod_func"
            old_sympos = 2
            [[state]]
            id = 7
            version = 3
        """

        definition = parse(text, "demo.toml")

        assert (
            True,
            (ObjectDef("test_klp_mod", (FuncDef("mod_func", "livepatch_mod_func", 2),)),),
            (StateDef(7, 3),),
        ) == (definition.replace, definition.objects, definition.states)

    def test_plain_module(self):
        """A module with livepatch = false and no objects does not call klp_enable_patch."""
        definition = parse('name = "test_klp_mod"\nlivepatch = false\n', "m.toml")

        assert not definition.calls_klp_enable_patch

    def test_dash_becomes_underscore(self):
        """'-' in a module name is turned into '_', as kbuild does."""
        assert "test_klp_livepatch" == parse('name = "test-klp-livepatch"', "x.toml").name


class TestMissing:
    """Required keys, named by their path."""

    def test_func_old_name(self):
        """A func without old_name names object and func indexes."""
        text = ONE_FUNC + '[[object.func]]\nnew_name = "x"\n'

        assert "demo.toml: object[0].func[1].old_name: missing" == error(text)

    def test_func_new_name(self):
        """A func without new_name is refused."""
        text = 'name = "demo"\n[[object]]\n[[object.func]]\nold_name = "x"\n'

        assert "demo.toml: object[0].func[0].new_name: missing" == error(text)

    def test_name_without_default(self):
        """parse() without a default name requires the name key."""
        assert "demo.toml: name: missing" == error("format = 1")

    def test_state_id(self):
        """A state needs its id."""
        assert "demo.toml: state[0].id: missing" == error('name = "demo"\n[[state]]\nversion = 1')


class TestUnknownKeys:
    """Keys that the format does not define."""

    def test_top_level(self):
        """An unknown top-level key is named."""
        assert "demo.toml: bogus: unknown key" == error('name = "demo"\nbogus = 1')

    def test_in_object(self):
        """An unknown object key is named with its object index."""
        text = 'name = "demo"\n[[object]]\nfuncs = []\n'

        assert "demo.toml: object[0].funcs: unknown key" == error(text)

    def test_in_func(self):
        """An unknown func key is named with both indexes."""
        text = ONE_FUNC + "sympos = 1\n"

        assert "demo.toml: object[0].func[0].sympos: unknown key" == error(text)


class TestTypes:
    """Every key is checked for its TOML type."""

    def test_int_for_bool(self):
        """An integer where a boolean belongs is refused with the value and its type."""
        assert "demo.toml: replace: expected a boolean, got 1 (int)" == error(
            'name = "demo"\nreplace = 1'
        )

    def test_bool_for_int(self):
        """A boolean is not an integer, although Python says so."""
        text = ONE_FUNC + "old_sympos = true\n"

        assert (
            "demo.toml: object[0].func[0].old_sympos: expected an integer, got True (bool)"
            == error(text)
        )

    def test_int_for_string(self):
        """A number where a name belongs is refused."""
        assert "demo.toml: name: expected a string, got 5 (int)" == error("name = 5")

    def test_scalar_for_object(self):
        """An object that is not a table is refused."""
        assert "demo.toml: object[0]: expected a table, got 1 (int)" == error(
            'name = "demo"\nobject = [1]'
        )

    def test_table_for_array(self):
        """object must be an array of tables."""
        assert "demo.toml: object: expected an array, got {} (dict)" == error(
            'name = "demo"\n[object]\n'
        )


class TestNegative:
    """Counts must not be negative."""

    def test_sympos(self):
        """A negative old_sympos is refused with its value."""
        text = ONE_FUNC + "old_sympos = -1\n"

        assert "demo.toml: object[0].func[0].old_sympos: must not be negative, got -1" == error(
            text
        )

    def test_state_version(self):
        """A negative state version is refused."""
        text = 'name = "demo"\n[[state]]\nid = 1\nversion = -2\n'

        assert "demo.toml: state[0].version: must not be negative, got -2" == error(text)


class TestNames:
    """Module names the kernel could have."""

    def test_invalid_characters(self):
        """A name with a blank is refused."""
        assert (
            "demo.toml: name: 'a b' is not a module name (letters, digits, '_' and '-')"
            == error('name = "a b"')
        )

    def test_too_long(self):
        """A name of MODULE_NAME_LEN (56) characters does not fit with its NUL."""
        assert "demo.toml: name: longer than 55 characters" == error(f'name = "{"m" * 56}"')

    def test_longest(self):
        """55 characters fit."""
        assert "m" * 55 == parse(f'name = "{"m" * 55}"', "demo.toml").name


class TestFormat:
    """The format version and the TOML syntax."""

    def test_unsupported_format(self):
        """A format this lpfs does not read is refused with both numbers."""
        assert "demo.toml: format: unsupported format 2, this lpfs reads format 1" == error(
            'format = 2\nname = "demo"'
        )

    def test_bad_toml(self):
        """A syntax error is reported against the file, without a key."""
        with pytest.raises(ModfileError) as info:
            parse("name = ", "demo.toml")

        assert ("demo.toml", "", True) == (
            info.value.file,
            info.value.key,
            str(info.value).startswith("demo.toml: not valid TOML: "),
        )


GETPID = """
name = "counter"
[[object]]
[[object.func]]
old_name = "__x64_sys_getpid"
new_name = "lp_sys_getpid"
[[param]]
name = "pids"
type = "int"
array = 4
mode = 0
[[param]]
name = "level"
type = "int"
"""


class TestKobjects:
    """``[[kobject]]``: directories a module adds to /sys/kernel, and their attributes."""

    def test_every_value(self):
        """A string and an integer are constants, a table a parameter or a pid count."""
        definition = parse(
            GETPID
            + """
[[kobject]]
name = "counter"
[[kobject.attr]]
name = "npids"
value = { pids = "pids", until_called = "__x64_sys_getpid" }
[[kobject.attr]]
name = "level"
mode = 0o644
value = { param = "level" }
[[kobject.attr]]
name = "text"
value = "hello"
[[kobject.attr]]
name = "number"
mode = 0o400
value = 7
""",
            "counter.toml",
        )

        assert (
            KobjectDef(
                "counter",
                (
                    AttrDef("npids", 0o444, PendingCallers("pids", "__x64_sys_getpid")),
                    AttrDef("level", 0o644, ParamText("level")),
                    AttrDef("text", 0o444, "hello\n"),
                    AttrDef("number", 0o400, "7\n"),
                ),
            ),
        ) == definition.kobjects

    def test_int_array_param(self):
        """``array`` makes a module_param_array() of that many elements; its default is a list."""
        definition = parse(GETPID.replace("mode = 0\n", "mode = 0\ndefault = [1, 2]\n"), "c.toml")

        assert ParamDef("pids", "int", 0, (1, 2), 4) == definition.param("pids")

    @pytest.mark.parametrize(
        ("kobject", "message"),
        [
            (
                'name = "a/b"',
                "c.toml: kobject[0].name: 'a/b' is not a sysfs name",
            ),
            (
                'name = "k"\n[[kobject.attr]]\nname = "x"',
                "c.toml: kobject[0].attr[0].value: missing",
            ),
            (
                'name = "k"\n[[kobject.attr]]\nname = "x"\nvalue = true',
                "c.toml: kobject[0].attr[0].value: expected a string, an integer or a table, "
                "got True (bool)",
            ),
            (
                'name = "k"\n[[kobject.attr]]\nname = "x"\nvalue = "1"\nmode = 0o666',
                "c.toml: kobject[0].attr[0].mode: 0o666 is not a sysfs mode (no world write)",
            ),
            (
                'name = "k"\n[[kobject.attr]]\nname = "x"\nvalue = { param = "nope" }',
                "c.toml: kobject[0].attr[0].value.param: no parameter 'nope' is declared",
            ),
            (
                'name = "k"\n[[kobject.attr]]\nname = "x"\n'
                'value = { pids = "level", until_called = "__x64_sys_getpid" }',
                "c.toml: kobject[0].attr[0].value.pids: parameter 'level' is int, not array of int",
            ),
            (
                'name = "k"\n[[kobject.attr]]\nname = "x"\n'
                'value = { pids = "pids", until_called = "do_fork" }',
                "c.toml: kobject[0].attr[0].value.until_called: "
                "the module does not patch vmlinux's do_fork",
            ),
            (
                'name = "k"\n[[kobject.attr]]\nname = "x"\nvalue = 1\n'
                '[[kobject.attr]]\nname = "x"\nvalue = 2',
                "c.toml: kobject[0].attr[1].name: 'x' is declared twice",
            ),
        ],
    )
    def test_errors(self, kobject, message):
        """Every fault names the file, the key and the reason."""
        assert message == error(f"{GETPID}[[kobject]]\n{kobject}\n", "c.toml")

    def test_array_default_too_long(self):
        """A default with more elements than the array holds is refused."""
        text = GETPID.replace("mode = 0\n", "mode = 0\ndefault = [1, 2, 3, 4, 5]\n")

        assert "c.toml: param[0].default: more than 4 elements" == error(text, "c.toml")

    def test_array_is_not_a_scalar(self):
        """A parameter that must be a scalar (replace) cannot be an array."""
        text = GETPID.replace('name = "counter"', 'name = "counter"\nreplace = { param = "pids" }')

        message = "c.toml: replace.param: parameter 'pids' is array of int, not int or bool"
        assert message == error(text, "c.toml")


class TestKprobesAndProcs:
    """``[[kprobe]]`` and ``[[proc]]``: what a module's init registers and creates."""

    def test_kprobe_post_handler_constant_or_parameter(self):
        definition = parse(
            """
name = "probe"
livepatch = false
[[param]]
name = "post"
type = "bool"
[[kprobe]]
symbol = "cmdline_proc_show"
post_handler = { param = "post" }
[[kprobe]]
symbol = "meminfo_proc_show"
""",
            "probe.toml",
        )
        assert (
            KprobeDef("cmdline_proc_show", "post"),
            KprobeDef("meminfo_proc_show", False),
        ) == definition.kprobes

    def test_kprobe_post_handler_needs_a_bool_parameter(self):
        text = 'name = "p"\n[[param]]\nname = "n"\ntype = "int"\n'
        text += '[[kprobe]]\nsymbol = "f"\npost_handler = { param = "n" }\n'
        assert "demo.toml: kprobe[0].post_handler.param: parameter 'n' is int, not bool" == (
            error(text)
        )

    def test_proc_defaults_and_newline(self):
        definition = parse(
            'name = "t"\n[[proc]]\nname = "t"\nshow = "t_show"\noutput = "t: original output"\n',
            "t.toml",
        )
        assert (ProcDef("t", "t_show", "t: original output\n", 0o444),) == definition.procs

    def test_proc_needs_its_show_function(self):
        assert "demo.toml: proc[0].show: missing" == error(
            'name = "t"\n[[proc]]\nname = "t"\noutput = "x"\n'
        )

    def test_proc_names_are_unique(self):
        entry = '[[proc]]\nname = "t"\nshow = "s"\noutput = "x"\n'
        assert "demo.toml: proc[1].name: 't' is declared twice" == error(
            'name = "t"\n' + entry + entry
        )


class TestLoad:
    """modfile.load reads a file and defaults the name to its stem."""

    def test_name_from_stem(self, tmp_path):
        """Without a name key the file's stem, normalised, is the module name."""
        path = tmp_path / "test-klp-demo.toml"
        path.write_text(ONE_FUNC.replace('name = "demo"', ""))

        assert ("test_klp_demo", str(path)) == (load(path).name, load(path).source)

    def test_name_key_wins(self, tmp_path):
        """A name key overrides the file's stem."""
        path = tmp_path / "other.toml"
        path.write_text(ONE_FUNC)

        assert "demo" == load(path).name

    def test_missing_file(self, tmp_path):
        """A file that cannot be read is a ModfileError naming it."""
        path = tmp_path / "absent.toml"

        with pytest.raises(ModfileError) as info:
            load(path)

        assert f"{path}: No such file or directory" == str(info.value)

    def test_not_utf8(self, tmp_path):
        """A file that is not UTF-8 is refused."""
        path = tmp_path / "bin.toml"
        path.write_bytes(b"name = '\xff'")

        with pytest.raises(ModfileError) as info:
            load(path)

        assert f"{path}: not UTF-8 text" == str(info.value)
