//! Bad recipes and boards get errors with file:line:column and what was expected.

mod common;

use common::*;

fn check_fails(p: &TestProject) -> String {
    let o = p.kiln(&["check"]);
    assert_eq!(
        o.status.code(),
        Some(2),
        "kiln check should fail; stderr:\n{}",
        stderr(&o)
    );
    stderr(&o)
}

#[test]
fn unknown_field_is_located_and_suggested() {
    let p = TestProject::new();
    p.board(&["a"]);
    p.write(
        "recipes/a.rhai",
        "#{\n    name: \"a\",\n    verison: \"1\",\n    steps: [\"true\"],\n}\n",
    );
    let err = check_fails(&p);
    assert!(err.contains("unknown field `verison` in recipe"), "{err}");
    assert!(err.contains("recipes/a.rhai:3:5"), "{err}");
    assert!(err.contains("did you mean `version`?"), "{err}");
    // The missing required version is reported in the same run.
    assert!(err.contains("missing required field `version`"), "{err}");
}

#[test]
fn wrong_type_names_both_types() {
    let p = TestProject::new();
    p.board(&["a"]);
    p.write(
        "recipes/a.rhai",
        "#{\n    name: \"a\",\n    version: 3,\n    steps: [\"true\"],\n}\n",
    );
    let err = check_fails(&p);
    assert!(
        err.contains("field `version` must be a string, found an integer"),
        "{err}"
    );
    assert!(err.contains("recipes/a.rhai:3:5"), "{err}");
}

#[test]
fn nested_source_errors_point_at_the_right_entry() {
    let p = TestProject::new();
    p.board(&["a"]);
    p.write(
        "recipes/a.rhai",
        r#"#{
    name: "a",
    version: "1",
    sources: [
        #{ url: "https://example.org/a.tar.gz", sha256: "0000000000000000000000000000000000000000000000000000000000000000" },
        #{ url: "https://example.org/b.tar.gz", sha256: "xyz" },
    ],
    steps: ["true"],
}
"#,
    );
    let err = check_fails(&p);
    assert!(
        err.contains("`sha256` `xyz` is not 64 lowercase hex digits"),
        "{err}"
    );
    assert!(err.contains("recipes/a.rhai:6:49"), "{err}");
}

#[test]
fn missing_dependency_is_located_with_suggestion() {
    let p = TestProject::new();
    p.board(&["a"]);
    p.write("recipes/zlib.rhai", &shell_recipe("zlib", &[], &["true"]));
    p.write("recipes/a.rhai", "#{\n    name: \"a\",\n    version: \"1\",\n    build_deps: [\"zlbi\"],\n    steps: [\"true\"],\n}\n");
    let err = check_fails(&p);
    assert!(
        err.contains("no recipe named `zlbi`, which is a dependency of `a`"),
        "{err}"
    );
    assert!(err.contains("recipes/a.rhai:4:18"), "{err}");
    assert!(err.contains("did you mean `zlib`?"), "{err}");
}

#[test]
fn duplicate_recipe_names_both_files() {
    let p = TestProject::new();
    p.board(&["a"]);
    p.write("recipes/a.rhai", &shell_recipe("a", &[], &["true"]));
    p.write("recipes/a-copy.rhai", &shell_recipe("a", &[], &["true"]));
    let err = check_fails(&p);
    assert!(err.contains("duplicate recipe name `a`"), "{err}");
    assert!(err.contains("recipes/a.rhai:2:5"), "{err}");
    assert!(
        err.contains("already defined in recipes/a-copy.rhai"),
        "{err}"
    );
}

#[test]
fn cycle_prints_the_whole_path() {
    let p = TestProject::new();
    p.board(&["a"]);
    p.write("recipes/a.rhai", &shell_recipe("a", &["b"], &["true"]));
    p.write("recipes/b.rhai", &shell_recipe("b", &["c"], &["true"]));
    p.write("recipes/c.rhai", &shell_recipe("c", &["a"], &["true"]));
    let err = check_fails(&p);
    assert!(err.contains("dependency cycle: a -> b -> c -> a"), "{err}");
    assert!(err.contains("recipes/a.rhai:4:18"), "{err}");
    assert!(err.contains("`b` build-depends on `c` here"), "{err}");
    assert!(err.contains("`c` build-depends on `a` here"), "{err}");
}

#[test]
fn endless_loop_stops_with_a_position() {
    let p = TestProject::new();
    p.board(&["a"]);
    p.write(
        "recipes/a.rhai",
        "let x = 0;\nloop {\n    x += 1;\n}\n#{ name: \"a\", version: \"1\", steps: [] }\n",
    );
    let start = std::time::Instant::now();
    let err = check_fails(&p);
    assert!(
        start.elapsed().as_secs() < 20,
        "the loop must be stopped quickly"
    );
    assert!(err.contains("endless loop"), "{err}");
    assert!(err.contains("recipes/a.rhai:3:"), "{err}");
}

#[test]
fn scripts_cannot_read_outside_their_directory() {
    let p = TestProject::new();
    p.board(&["a"]);
    p.write("recipes/a.rhai", "let pw = read_file(\"../../../etc/passwd\");\n#{ name: \"a\", version: \"1\", steps: [] }\n");
    let err = check_fails(&p);
    assert!(err.contains("not a plain relative path"), "{err}");
    assert!(err.contains("recipes/a.rhai:1:"), "{err}");

    p.write(
        "recipes/a.rhai",
        "import \"../../etc/x\" as x;\n#{ name: \"a\", version: \"1\", steps: [] }\n",
    );
    let err = check_fails(&p);
    assert!(err.contains("imports name a module"), "{err}");
}

#[test]
fn reading_own_files_works_and_is_hashed() {
    let p = TestProject::new();
    p.board(&["a"]);
    p.write("recipes/a/config.txt", "CONFIG_X=y\n");
    p.write(
        "recipes/a.rhai",
        "let c = read_file(\"config.txt\");\nlet h = file_blake3(\"config.txt\");\n#{ name: \"a\", version: \"1\", env: #{ CFG: c, H: h }, steps: [\"true\"] }\n",
    );
    let o = p.kiln(&["show", "a"]);
    assert!(o.status.success(), "{}", stderr(&o));
    let v: serde_json::Value = serde_json::from_str(&stdout(&o)).expect("json");
    assert_eq!(v["recipe"]["env"]["CFG"], "CONFIG_X=y\n");
    assert_eq!(
        v["recipe"]["env"]["H"],
        blake3::hash(b"CONFIG_X=y\n").to_hex().as_str()
    );
}

#[test]
fn syntax_errors_are_located() {
    let p = TestProject::new();
    p.board(&["a"]);
    p.write(
        "recipes/a.rhai",
        "#{\n    name: \"a\",\n    version: \"1\"\n    steps: [],\n}\n",
    );
    let err = check_fails(&p);
    assert!(err.contains("syntax error"), "{err}");
    assert!(err.contains("recipes/a.rhai:4:"), "{err}");
}

#[test]
fn board_overrides_apply_and_errors_point_at_the_board() {
    let p = TestProject::new();
    p.write(
        "recipes/a.rhai",
        &shell_recipe("a", &[], &["echo base > /out/a"]),
    );
    p.write("recipes/b.rhai", &shell_recipe("b", &[], &["true"]));
    let board = BOARD.replace("PACKAGES", "[\"a\", \"b\"]").replace(
        "packages:",
        "overrides: #{\n        a: #{ env: #{ EXTRA: \"1\" } },\n        b: |r| { r.steps += [\"echo more\"]; r },\n    },\n    packages:",
    );
    p.write("boards/test-board.rhai", &board);
    let o = p.kiln(&["show", "a"]);
    assert!(o.status.success(), "{}", stderr(&o));
    let v: serde_json::Value = serde_json::from_str(&stdout(&o)).expect("json");
    assert_eq!(v["recipe"]["env"]["EXTRA"], "1");
    let o = p.kiln(&["show", "b"]);
    let v: serde_json::Value = serde_json::from_str(&stdout(&o)).expect("json");
    assert_eq!(v["recipe"]["steps"][1]["argv"][2], "echo more");

    // A bad value written by the override is reported in the board file.
    let bad = board.replace("a: #{ env: #{ EXTRA: \"1\" } }", "a: #{ version: 7 }");
    p.write("boards/test-board.rhai", &bad);
    let err = check_fails(&p);
    assert!(
        err.contains("field `version` must be a string, found an integer"),
        "{err}"
    );
    assert!(err.contains("boards/test-board.rhai:8:"), "{err}");

    let bad = board.replace("a: #{ env", "nope: #{ env");
    p.write("boards/test-board.rhai", &bad);
    let err = check_fails(&p);
    assert!(err.contains("override for unknown recipe `nope`"), "{err}");
}

#[test]
fn unknown_board_field_and_missing_package() {
    let p = TestProject::new();
    p.write("recipes/a.rhai", &shell_recipe("a", &[], &["true"]));
    let board = BOARD
        .replace("PACKAGES", "[\"a\", \"nope\"]")
        .replace("packages:", "pakages: [],\n    packages:");
    p.write("boards/test-board.rhai", &board);
    let err = check_fails(&p);
    assert!(err.contains("unknown field `pakages` in board"), "{err}");
    assert!(err.contains("did you mean `packages`?"), "{err}");
}

/// A board's kernel and bootloader sections reach their recipes as files
/// and environment, are part of the key, and bad ones are located.
#[test]
fn kernel_fragments_and_bootloader_config_reach_their_recipes() {
    let p = TestProject::new();
    p.write(
        "recipes/linux.rhai",
        &shell_recipe(
            "linux",
            &[],
            &["for f in $KILN_KCONFIG_FRAGMENTS; do cat $f; done > /out/config; echo $KILN_KCONFIG_BASE >> /out/config"],
        ),
    );
    let loader = bootloader_recipe("loader", "echo $KILN_BOOTLOADER_CONFIG > /out/config");
    p.write("recipes/loader.rhai", &loader);
    p.write("boards/kernel/common.config", "CONFIG_EROFS_FS=y\n");
    p.write("boards/test/kernel.config", "CONFIG_VIRTIO_BLK=y\n");
    let board = BOARD.replace("PACKAGES", "[]").replace(
        "packages:",
        "kernel: #{ recipe: \"linux\", base: \"tinyconfig\", fragments: [\"kernel/common.config\", \"test/kernel.config\"] },\n    bootloader: #{ recipe: \"loader\", config: \"qemu_arm64_defconfig\" },\n    packages:",
    );
    p.write("boards/test-board.rhai", &board);

    let o = p.kiln(&["show", "linux"]);
    assert!(o.status.success(), "{}", stderr(&o));
    let v: serde_json::Value = serde_json::from_str(&stdout(&o)).expect("json");
    assert_eq!(v["recipe"]["env"]["KILN_KCONFIG_BASE"], "tinyconfig");
    assert_eq!(
        v["recipe"]["env"]["KILN_KCONFIG_FRAGMENTS"],
        "kiln-kconfig/00-common.config kiln-kconfig/01-kernel.config"
    );
    let key = v["key"].as_str().expect("key").to_string();

    // Building the board builds kernel and bootloader with those inputs.
    let o = p.kiln(&["build", "linux", "loader"]);
    assert!(o.status.success(), "{}", stderr(&o));
    let out =
        std::fs::read_to_string(p.root().join("out/test-board/linux/config")).expect("config");
    assert_eq!(out, "CONFIG_EROFS_FS=y\nCONFIG_VIRTIO_BLK=y\ntinyconfig\n");
    let out =
        std::fs::read_to_string(p.root().join("out/test-board/loader/config")).expect("config");
    assert_eq!(out, "qemu_arm64_defconfig\n");

    // A fragment's content is part of the kernel's key.
    p.write("boards/test/kernel.config", "CONFIG_VIRTIO_BLK=n\n");
    let o = p.kiln(&["show", "linux"]);
    let v: serde_json::Value = serde_json::from_str(&stdout(&o)).expect("json");
    assert_ne!(v["key"].as_str().expect("key"), key);

    // A missing fragment, one outside boards/, and an unknown recipe.
    let bad = board.replace(
        "\"test/kernel.config\"",
        "\"test/nope.config\", \"../kiln.toml\"",
    );
    p.write("boards/test-board.rhai", &bad);
    let err = check_fails(&p);
    assert!(
        err.contains("kernel config fragment `test/nope.config` not found (boards/test/nope.config does not exist)"),
        "{err}"
    );
    assert!(err.contains("boards/test-board.rhai:7:89"), "{err}");
    assert!(
        err.contains("kernel config fragment `../kiln.toml` is outside the boards directory"),
        "{err}"
    );
    let bad = board.replace("recipe: \"loader\"", "recipe: \"lodaer\"");
    p.write("boards/test-board.rhai", &bad);
    let err = check_fails(&p);
    assert!(
        err.contains("bootloader recipe `lodaer` does not exist"),
        "{err}"
    );
    assert!(err.contains("boards/test-board.rhai:8:"), "{err}");
    assert!(err.contains("did you mean `loader`?"), "{err}");

    // A bootloader without A/B support, or one that can't read the board's
    // partition table, is refused before anything is built.
    p.write("boards/test-board.rhai", &board);
    p.write("recipes/loader.rhai", &loader.replace("\"ab-boot\", ", ""));
    let err = check_fails(&p);
    assert!(
        err.contains("bootloader recipe `loader` does not provide `ab-boot`: it can't do the balenaOS A/B root selection"),
        "{err}"
    );
    assert!(err.contains("`loader` provides: [table:mbr]"), "{err}");
    p.write("recipes/loader.rhai", &loader);
    let gpt = board.replace(
        "packages:",
        "partitions: #{ table: \"gpt\" },\n    packages:",
    );
    p.write("boards/test-board.rhai", &gpt);
    let err = check_fails(&p);
    assert!(
        err.contains("does not provide `table:gpt`: it can't do a gpt partition table"),
        "{err}"
    );
}

#[test]
fn a_recipe_cannot_take_the_image_nodes_name() {
    let p = TestProject::new();
    p.board(&["image"]);
    p.write(
        "recipes/image.rhai",
        &shell_recipe("image", &[], &["echo x > /out/x"]),
    );
    let err = check_fails(&p);
    assert!(err.contains("--> recipes/image.rhai:1:1"), "{err}");
    assert!(
        err.contains("a recipe can't be named `image`: that is the name of the board's image node"),
        "{err}"
    );
    assert!(err.contains("help: rename the recipe"), "{err}");
}

#[test]
fn sources_lists_everything_that_evaluates_and_then_reports_the_rest() {
    let p = TestProject::new();
    p.board(&["good"]);
    p.write(
        "recipes/good.rhai",
        r#"#{ name: "good", version: "1",
             sources: [#{ url: "https://example.org/good-1.tar.gz",
                          sha256: "1111111111111111111111111111111111111111111111111111111111111111",
                          debian: "good" }],
             steps: ["true"] }"#,
    );
    // A second board with a mistake: seeding must go on for the first.
    let bad = BOARD
        .replace("test-board", "bad-board")
        .replace("PACKAGES", "[\"good\"],\n    colour: \"red\"");
    p.write("boards/bad-board.rhai", &bad);
    let o = p.kiln(&["sources", "--json"]);
    assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));
    let listed: serde_json::Value =
        serde_json::from_slice(&o.stdout).expect("the list comes first");
    assert_eq!(
        listed[0]["url"], "https://example.org/good-1.tar.gz",
        "{listed}"
    );
    let err = stderr(&o);
    assert!(err.contains("boards/bad-board.rhai"), "{err}");
    assert!(err.contains("unknown field `colour`"), "{err}");
}
