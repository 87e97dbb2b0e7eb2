//! End-to-end tests of `pulsefocus inspect` and `pulsefocus convert-weights`
//! on the checkpoints real paddlepaddle wrote (formats/tests/fixtures/paddle),
//! and a check that paddlepaddle reads what pulsefocus writes.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use pulsefocus_formats::{load_checkpoint, Checkpoint, DType};

fn pulsefocus(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_pulsefocus"))
        .args(args)
        .output()
        .unwrap()
}

fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../formats/tests/fixtures/paddle")
}

fn fixture(name: &str) -> String {
    fixtures().join(name).to_str().unwrap().to_string()
}

fn stdout(out: &Output) -> String {
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout.clone()).unwrap()
}

fn same_tensors(a: &Checkpoint, b: &Checkpoint) {
    assert_eq!(a.len(), b.len());
    for (name, t) in a.iter() {
        let other = b.get(name).unwrap_or_else(|| panic!("{name} missing"));
        assert_eq!((t.dtype, &t.shape), (other.dtype, &other.shape), "{name}");
        assert_eq!(t.bytes, other.bytes, "{name}");
    }
}

#[test]
fn inspect_lists_tensors_and_totals() {
    let text = stdout(&pulsefocus(&["inspect", &fixture("dygraph.pdparams")]));
    let lines: Vec<&str> = text.lines().collect();
    assert!(
        lines[0].starts_with("conv.weight") && lines[0].contains("float32"),
        "{text}"
    );
    assert!(
        lines[0].contains("[4, 3, 3, 3]") && lines[0].ends_with(" 108"),
        "{text}"
    );
    assert_eq!(lines.last().unwrap(), &"6 tensors, 128 elements, 512 bytes");
}

#[test]
fn inspect_json_is_the_file_order() {
    let text = stdout(&pulsefocus(&["inspect", "--json", &fixture("vars")]));
    let entries: serde_json::Value = serde_json::from_str(&text).unwrap();
    let entries = entries.as_array().unwrap();
    assert_eq!(entries.len(), 14);
    assert_eq!(
        entries[0],
        serde_json::json!({"name": "sub.layer.w_0", "dtype": "float32", "shape": [300, 1]})
    );
    let scalar = entries.iter().find(|e| e["name"] == "t_scalar").unwrap();
    assert_eq!(scalar["shape"], serde_json::json!([]));
    let dtypes: Vec<&str> = entries
        .iter()
        .map(|e| e["dtype"].as_str().unwrap())
        .collect();
    for dtype in DType::ALL {
        assert!(dtypes.contains(&dtype.name()));
    }
}

#[test]
fn convert_to_every_format_and_back_is_bit_exact() {
    let tmp = tempfile::tempdir().unwrap();
    for source in [
        "vars",
        "static.pdparams",
        "dygraph.pdopt",
        "inference.pdiparams",
    ] {
        let original = load_checkpoint(&fixtures().join(source)).unwrap();
        for target in [
            "d",
            "m.tar",
            "m.tgz",
            "m.pdparams",
            "m.safetensors",
            "p.pdiparams",
        ] {
            let out = tmp
                .path()
                .join(format!("{}-{target}", source.replace('.', "_")));
            let out = out.to_str().unwrap();
            stdout(&pulsefocus(&["convert-weights", &fixture(source), out]));
            let converted = load_checkpoint(Path::new(out)).unwrap();
            same_tensors(&original, &converted);
            let back = format!("{out}.safetensors");
            stdout(&pulsefocus(&["convert-weights", out, &back]));
            same_tensors(&original, &load_checkpoint(Path::new(&back)).unwrap());
        }
    }
    // --to overrides the name: a directory named like a file.
    let out = tmp.path().join("named.bin");
    let args = [
        "convert-weights",
        &fixture("vars"),
        out.to_str().unwrap(),
        "--to",
        "dir",
    ];
    stdout(&pulsefocus(&args));
    assert!(out.is_dir());
}

#[test]
fn pdopt_keeps_its_scheduler_state() {
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("copy.pdopt");
    stdout(&pulsefocus(&[
        "convert-weights",
        &fixture("dygraph.pdopt"),
        out.to_str().unwrap(),
    ]));
    let original = load_checkpoint(&fixtures().join("dygraph.pdopt")).unwrap();
    let copy = load_checkpoint(&out).unwrap();
    assert_eq!(
        copy.metadata["LR_Scheduler"],
        original.metadata["LR_Scheduler"]
    );
    same_tensors(&original, &copy);
}

#[test]
fn dtype_float16_casts_only_floating_tensors() {
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("half.safetensors");
    let args = [
        "convert-weights",
        &fixture("vars"),
        out.to_str().unwrap(),
        "--dtype",
        "float16",
    ];
    stdout(&pulsefocus(&args));
    let original = load_checkpoint(&fixtures().join("vars")).unwrap();
    let half = load_checkpoint(&out).unwrap();
    for (name, t) in original.iter() {
        let h = half.get(name).unwrap();
        if t.dtype.is_float() {
            assert_eq!(h.dtype, DType::F16, "{name}");
            for (a, b) in t.to_f32_vec().iter().zip(h.to_f32_vec()) {
                assert!((a - b).abs() <= a.abs() * 1e-3 + 1e-7, "{name}: {a} vs {b}");
            }
        } else {
            assert_eq!(
                (h.dtype, &h.shape, &h.bytes),
                (t.dtype, &t.shape, &t.bytes),
                "{name}"
            );
        }
    }
}

#[test]
fn dtype_float16_refuses_values_it_cannot_hold() {
    let tmp = tempfile::tempdir().unwrap();
    let input = tmp.path().join("big.safetensors");
    let mut checkpoint = Checkpoint::new();
    checkpoint.insert(
        "conv2_1_dw_bn_variance",
        pulsefocus_formats::RawTensor::from_f32(vec![2], &[1.0, 1.0e5]),
    );
    pulsefocus_formats::save_checkpoint(
        &checkpoint,
        &input,
        pulsefocus_formats::Format::Safetensors,
    )
    .unwrap();
    let out = tmp.path().join("half.safetensors");
    let result = pulsefocus(&[
        "convert-weights",
        input.to_str().unwrap(),
        out.to_str().unwrap(),
        "--dtype",
        "float16",
    ]);
    assert!(!result.status.success());
    let stderr = String::from_utf8_lossy(&result.stderr);
    assert!(stderr.contains("conv2_1_dw_bn_variance"), "{stderr}");
    assert!(!out.exists());
}

#[test]
fn bad_input_fails_with_one_line() {
    let tmp = tempfile::tempdir().unwrap();
    let truncated = tmp.path().join("model.pdparams");
    let bytes = std::fs::read(fixtures().join("static.pdparams")).unwrap();
    std::fs::write(&truncated, &bytes[..bytes.len() / 2]).unwrap();
    let empty = tmp.path().join("empty");
    std::fs::create_dir(&empty).unwrap();
    let cases = [
        vec![
            "inspect".to_string(),
            truncated.to_str().unwrap().to_string(),
        ],
        vec!["inspect".into(), empty.to_str().unwrap().into()],
        vec!["inspect".into(), "/no/such/checkpoint".into()],
        vec![
            "convert-weights".into(),
            fixture("vars"),
            "x".into(),
            "--to".into(),
            "zip".into(),
        ],
        vec![
            "convert-weights".into(),
            fixture("vars"),
            "x".into(),
            "--dtype".into(),
            "int8".into(),
        ],
    ];
    for args in cases {
        let out = Command::new(env!("CARGO_BIN_EXE_pulsefocus"))
            .args(&args)
            .output()
            .unwrap();
        assert!(!out.status.success(), "{args:?}");
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(err.lines().count(), 1, "{args:?}: {err}");
        assert!(err.starts_with("error: "), "{err}");
    }
}

/// Writes each format with pulsefocus, then has paddlepaddle read it back and
/// compare every value with what the fixture script recorded.
const PADDLE_READS_BACK: &str = r#"
import json, os, sys, tarfile, tempfile
os.environ["FLAGS_enable_pir_api"] = "0"
import numpy as np
import paddle

out, values = sys.argv[1], json.load(open(sys.argv[2]))
paddle.enable_static()

def check(state, key, what):
    want = {t["name"]: t for t in values[key]["tensors"]}
    assert sorted(state) == sorted(want), (what, sorted(state))
    for name, t in want.items():
        a = np.array(state[name])
        assert list(a.shape) == t["shape"], (what, name, a.shape)
        assert a.tobytes().hex() == t["hex"], (what, name)
    print("paddle read", what, len(want), "tensors")

check(paddle.static.load_program_state(os.path.join(out, "m_dir")), "vars", "dir")
with tempfile.TemporaryDirectory() as tmp:
    tarfile.open(os.path.join(out, "m.tar")).extractall(tmp)
    check(paddle.static.load_program_state(os.path.join(tmp, "m")), "vars", "tar")
check(paddle.static.load_program_state(os.path.join(out, "m")), "vars", "pdparams (load_program_state)")
check(paddle.load(os.path.join(out, "m.pdparams"), return_numpy=True), "vars", "pdparams (paddle.load)")
main = paddle.static.Program()
tensors = values["combined"]["tensors"]
variables = [main.global_block().create_var(name=t["name"], shape=t["shape"], dtype=t["dtype"],
                                            persistable=True) for t in tensors]
exe = paddle.static.Executor(paddle.CPUPlace())
paddle.static.load_vars(exe, os.path.join(out, "comb"), main, vars=variables, filename="__params__")
scope = paddle.static.global_scope()
check({t["name"]: np.array(scope.find_var(t["name"]).get_tensor()) for t in tensors}, "combined", "combined")
"#;

#[test]
fn paddle_reads_what_pulsefocus_writes() {
    let probe = Command::new("python3")
        .args(["-c", "import paddle"])
        .output();
    if !probe.as_ref().is_ok_and(|o| o.status.success()) {
        assert!(
            std::env::var_os("CI").is_none(),
            "CI is set but python3 cannot import paddle"
        );
        eprintln!("skipped: python3 cannot import paddle (pip install paddlepaddle)");
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let at = |name: &str| tmp.path().join(name).to_str().unwrap().to_string();
    for (source, target) in [
        ("vars", "m_dir"),
        ("vars", "m.tar"),
        ("vars", "m.pdparams"),
        ("combined", "comb"),
    ] {
        let mut args = vec!["convert-weights".to_string(), fixture(source), at(target)];
        if target == "comb" {
            args.extend(["--to".into(), "params".into()]);
        }
        let out = Command::new(env!("CARGO_BIN_EXE_pulsefocus"))
            .args(&args)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let out = Command::new("python3")
        .args(["-c", PADDLE_READS_BACK, &at(""), &fixture("values.json")])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{text}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(text.matches("paddle read").count(), 5, "{text}");
}

/// A checkpoint of one tensor `x` holding `values`, written as `path`.
fn write_one_tensor(path: &Path, name: &str, values: &[f32]) {
    let mut checkpoint = Checkpoint::new();
    checkpoint.insert(
        name,
        pulsefocus_formats::RawTensor::from_f32(vec![values.len()], values),
    );
    pulsefocus_formats::save_checkpoint(
        &checkpoint,
        path,
        pulsefocus_formats::Format::from_path(path),
    )
    .unwrap();
}

#[test]
fn a_tar_member_given_twice_is_read_with_a_warning() {
    let tmp = tempfile::tempdir().unwrap();
    // Same archive name, so both hold their tensor in the folder m/.
    std::fs::create_dir(tmp.path().join("1")).unwrap();
    std::fs::create_dir(tmp.path().join("2")).unwrap();
    let (first, second) = (tmp.path().join("1/m.tar"), tmp.path().join("2/m.tar"));
    write_one_tensor(&first, "x", &[1.0]);
    write_one_tensor(&second, "x", &[2.0]);
    // The first archive without its two closing zero blocks, then the second.
    let mut tar = std::fs::read(&first).unwrap();
    let end = tar.len() - 1024;
    assert!(tar[end..].iter().all(|&b| b == 0));
    tar.truncate(end);
    tar.extend(std::fs::read(&second).unwrap());
    let twice = tmp.path().join("twice.tar");
    std::fs::write(&twice, &tar).unwrap();
    let out = pulsefocus(&["inspect", twice.to_str().unwrap()]);
    let text = stdout(&out);
    assert!(text.contains("1 tensors"), "{text}");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.starts_with("warning: ")
            && stderr.contains("twice.tar (entry x): the archive holds 2 copies; the last is used"),
        "{stderr}"
    );
    assert_eq!(
        load_checkpoint(&twice)
            .unwrap()
            .get("x")
            .unwrap()
            .to_f32_vec(),
        [2.0]
    );
}

/// A tensor name of 65,536 characters or more made the table's column width
/// out of range (a panic).
#[test]
fn inspect_lists_a_huge_tensor_name() {
    let tmp = tempfile::tempdir().unwrap();
    let path = tmp.path().join("m.safetensors");
    let name = "n".repeat(70_000);
    write_one_tensor(&path, &name, &[1.0]);
    let text = stdout(&pulsefocus(&["inspect", path.to_str().unwrap()]));
    assert!(text.contains(&name));
}

/// A `.tar.gz` of a few MB whose gzip trailer claims 4 GiB: the buffer was
/// reserved from the trailer (4 GiB) before the stream was found short, an
/// abort under an address-space limit. Now it is a one-line error.
#[cfg(target_os = "linux")]
#[test]
fn a_lying_gzip_trailer_reserves_nothing_like_it() {
    let tmp = tempfile::tempdir().unwrap();
    let path = tmp.path().join("m.tar.gz");
    // Values that barely compress: about 4 MB of gzip.
    let mut state = 1u32;
    let values: Vec<f32> = (0..1_000_000)
        .map(|_| {
            state = state.wrapping_mul(1_664_525).wrapping_add(1_013_904_223);
            f32::from_bits(state >> 2)
        })
        .collect();
    write_one_tensor(&path, "x", &values);
    let mut gz = std::fs::read(&path).unwrap();
    assert!(gz.len() > 3_000_000, "{}", gz.len());
    let at = gz.len() - 4;
    gz[at..].copy_from_slice(&u32::MAX.to_le_bytes());
    std::fs::write(&path, &gz).unwrap();
    // 1 GiB of address space: plenty to read the file, far from 4 GiB.
    let out = Command::new("bash")
        .args([
            "-c",
            "ulimit -v 1048576 && exec \"$0\" inspect \"$1\"",
            env!("CARGO_BIN_EXE_pulsefocus"),
            path.to_str().unwrap(),
        ])
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert_eq!(stderr.lines().count(), 1, "{stderr}");
    assert!(
        stderr.starts_with("error: ") && stderr.contains("m.tar.gz"),
        "{stderr}"
    );
}
