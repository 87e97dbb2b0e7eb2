//! End-to-end tests of `synth`, `dataset check` and `x2coco` through the built binary.

use std::fs;
use std::path::Path;
use std::process::{Command, Output};

fn pulsefocus(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_pulsefocus"))
        .args(args)
        .output()
        .unwrap()
}

fn stdout_json(out: &Output) -> serde_json::Value {
    serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
        panic!(
            "{e}: stdout {} stderr {}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        )
    })
}

fn synth(out: &Path, extra: &[&str]) {
    let mut args = vec![
        "synth",
        "--out",
        out.to_str().unwrap(),
        "--images",
        "30",
        "--size",
        "96",
    ];
    args.extend_from_slice(extra);
    let run = pulsefocus(&args);
    assert!(
        run.status.success(),
        "{}",
        String::from_utf8_lossy(&run.stderr)
    );
}

#[test]
fn synth_dataset_checks_clean_in_both_layouts() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("shapes");
    synth(&out, &["--classes", "3", "--first-class", "6"]);
    let d = out.to_str().unwrap();
    let voc = pulsefocus(&[
        "dataset",
        "check",
        "--dataset-type",
        "voc",
        "--dataset-dir",
        d,
        "--anno-path",
        "trainval.txt",
        "--json",
    ]);
    assert!(voc.status.success());
    let voc = stdout_json(&voc);
    assert_eq!(voc["images"], 24);
    assert_eq!(voc["problems"].as_array().unwrap().len(), 0);
    assert_eq!(voc["per_class"].as_object().unwrap().len(), 3);
    let per_class_total: u64 = voc["per_class"]
        .as_object()
        .unwrap()
        .values()
        .map(|v| v.as_u64().unwrap())
        .sum();
    assert_eq!(per_class_total, voc["boxes"].as_u64().unwrap());

    let coco = pulsefocus(&[
        "dataset",
        "check",
        "--dataset-type",
        "coco",
        "--dataset-dir",
        d,
        "--image-dir",
        "JPEGImages",
        "--anno-path",
        "annotations/instances_train.json",
        "--load-crowd",
        "--json",
    ]);
    let coco = stdout_json(&coco);
    assert_eq!(coco["images"], voc["images"]);
    assert_eq!(coco["boxes"], voc["boxes"]);
    assert_eq!(coco["per_class"], voc["per_class"]);
    assert_eq!(coco["crowd_boxes"], voc["difficult_boxes"]);

    // Same seed, same bytes; another seed, other images.
    let again = dir.path().join("again");
    synth(&again, &["--classes", "3", "--first-class", "6"]);
    let image = "JPEGImages/000007.jpg";
    assert_eq!(
        fs::read(out.join(image)).unwrap(),
        fs::read(again.join(image)).unwrap()
    );
    synth(
        &again,
        &["--classes", "3", "--first-class", "6", "--seed", "5"],
    );
    assert_ne!(
        fs::read(out.join(image)).unwrap(),
        fs::read(again.join(image)).unwrap()
    );
}

/// A class name of 65,536 characters or more (a label_list.txt line or a
/// COCO category) panicked the text report ("Formatting argument out of range").
#[test]
fn a_huge_class_name_is_reported() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("shapes");
    synth(&out, &["--classes", "3"]);
    let long = "c".repeat(70_000);
    let labels = out.join("label_list.txt");
    let text = fs::read_to_string(&labels).unwrap();
    fs::write(&labels, format!("{text}{long}\n")).unwrap();
    let coco_file = out.join("annotations/instances_train.json");
    let mut coco: serde_json::Value =
        serde_json::from_slice(&fs::read(&coco_file).unwrap()).unwrap();
    coco["categories"]
        .as_array_mut()
        .unwrap()
        .push(serde_json::json!({"id": 99, "name": long, "supercategory": ""}));
    fs::write(&coco_file, coco.to_string()).unwrap();
    let d = out.to_str().unwrap();
    for kind in [
        &["voc", "--anno-path", "trainval.txt"][..],
        &[
            "coco",
            "--anno-path",
            "annotations/instances_train.json",
            "--image-dir",
            "JPEGImages",
        ],
    ] {
        let mut args = vec!["dataset", "check", "--dataset-dir", d, "--dataset-type"];
        args.extend(kind);
        let run = pulsefocus(&args);
        let stderr = String::from_utf8_lossy(&run.stderr);
        assert!(run.status.success(), "{kind:?}: {stderr}");
        let text = String::from_utf8_lossy(&run.stdout);
        assert!(text.contains(&format!("    {long}  0\n")), "{kind:?}");
    }
}

const SIZE: &str = "<size><width>96</width><height>96</height></size>";

fn voc_xml(objects: &[(&str, [i32; 4])]) -> String {
    let mut s = format!("<annotation>\n{SIZE}\n");
    for (name, b) in objects {
        s += &format!(
            "<object><name>{name}</name><bndbox><xmin>{}</xmin><ymin>{}</ymin><xmax>{}</xmax><ymax>{}</ymax></bndbox></object>\n",
            b[0], b[1], b[2], b[3]
        );
    }
    s + "</annotation>\n"
}

#[test]
fn broken_voc_dataset_lists_every_problem_and_fails() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let files = [
        ("ok.xml", voc_xml(&[("dog", [1, 1, 20, 20])])),
        ("clipped.xml", voc_xml(&[("dog", [-5, 1, 200, 20])])),
        (
            "inverted.xml",
            voc_xml(&[("dog", [30, 1, 20, 20]), ("cat", [1, 1, 9, 9])]),
        ),
        ("zebra.xml", voc_xml(&[("zebra", [1, 1, 20, 20])])),
        ("broken.xml", "<annotation><object>".to_string()),
        ("empty.xml", voc_xml(&[])),
        ("nosuchimage.xml", voc_xml(&[("dog", [1, 1, 20, 20])])),
    ];
    for (name, text) in &files {
        fs::write(d.join(name), text).unwrap();
        if *name != "nosuchimage.xml" {
            fs::write(d.join(name.replace(".xml", ".jpg")), b"").unwrap();
        }
    }
    fs::write(d.join("label_list.txt"), "dog\ncat\n").unwrap();
    let list: String = files
        .iter()
        .map(|(n, _)| format!("{} {n}\n", n.replace(".xml", ".jpg")))
        .collect();
    fs::write(
        d.join("train.txt"),
        list + "lonely-token\nok.jpg missing.xml\n",
    )
    .unwrap();

    let run = pulsefocus(&[
        "dataset",
        "check",
        "--dataset-type",
        "voc",
        "--dataset-dir",
        d.to_str().unwrap(),
        "--anno-path",
        "train.txt",
        "--json",
    ]);
    assert!(!run.status.success());
    let stderr = String::from_utf8_lossy(&run.stderr);
    assert!(stderr.contains("2 error(s)"), "{stderr}");
    // The error line names the first error's file and place, as the list does.
    assert!(
        stderr.starts_with("error: ")
            && stderr.contains("zebra.xml (line 3, object 1): class name \"zebra\""),
        "{stderr}"
    );
    let report = stdout_json(&run);
    assert_eq!(report["images"], 3);
    assert_eq!(report["boxes"], 3);
    assert_eq!(report["per_class"]["cat"], 1);
    let problems: Vec<(String, String, String)> = report["problems"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| {
            let file = Path::new(p["file"].as_str().unwrap())
                .file_name()
                .unwrap()
                .to_string_lossy()
                .into_owned();
            (
                file,
                p["where"].as_str().unwrap().to_string(),
                p["what"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    let expect = [
        ("zebra.xml", "line 3, object 1", "\"zebra\""),
        ("broken.xml", "line 1", "invalid XML"),
        ("clipped.xml", "line 3, object 1", "clipped"),
        ("inverted.xml", "line 3, object 1", "invalid box"),
        ("empty.xml", "<annotation>", "no <object>"),
        ("nosuchimage.jpg", "train.txt line 7", "not found"),
        ("train.txt", "line 8", "one token"),
        ("missing.xml", "train.txt line 9", "not found"),
    ];
    assert_eq!(problems.len(), expect.len(), "{problems:#?}");
    for ((file, place, what), (want_file, want_place, want_what)) in problems.iter().zip(expect) {
        assert_eq!(file, want_file);
        assert!(place.ends_with(want_place), "{place} vs {want_place}");
        assert!(what.contains(want_what), "{what} vs {want_what}");
    }
}

#[test]
fn broken_coco_dataset_lists_problems_and_malformed_json_names_the_line() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    fs::create_dir(d.join("images")).unwrap();
    fs::write(d.join("images/a.jpg"), b"").unwrap();
    let json = r#"{"images": [{"id": 1, "file_name": "a.jpg", "width": 50, "height": 40},
                {"id": 2, "file_name": "gone.jpg", "width": 50, "height": 40}],
     "categories": [{"id": 1, "name": "dog"}],
     "annotations": [{"id": 5, "image_id": 1, "category_id": 1, "bbox": [40, 0, 20, 10], "area": 200, "iscrowd": 0},
                     {"id": 6, "image_id": 1, "category_id": 1, "bbox": [60, 0, 20, 10], "area": 200, "iscrowd": 0}]}"#;
    fs::write(d.join("train.json"), json).unwrap();
    let args = [
        "dataset",
        "check",
        "--dataset-type",
        "coco",
        "--dataset-dir",
        d.to_str().unwrap(),
        "--anno-path",
        "train.json",
    ];
    let run = pulsefocus(&[&args[..], &["--json"]].concat());
    assert!(run.status.success());
    let report = stdout_json(&run);
    let places: Vec<&str> = report["problems"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["where"].as_str().unwrap())
        .collect();
    assert_eq!(places, ["annotation id 5", "annotation id 6", "image id 2"]);
    assert_eq!(report["boxes"], 1);

    fs::write(d.join("train.json"), "{\"images\": [\n  {\"id\": 1,}\n]}").unwrap();
    let run = pulsefocus(&args);
    assert!(!run.status.success());
    let text = String::from_utf8_lossy(&run.stdout);
    assert!(text.contains("train.json (line 2, column"), "{text}");
}

#[test]
fn x2coco_voc_output_loads_as_a_coco_dataset() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("shapes");
    synth(&out, &["--format", "voc"]);
    let o = out.to_str().unwrap();
    let run = pulsefocus(&[
        "x2coco",
        "--dataset_type",
        "voc",
        "--voc_anno_dir",
        o,
        "--voc-anno-list",
        &format!("{o}/test.txt"),
        "--voc_label_list",
        &format!("{o}/label_list.txt"),
        "--output_dir",
        &format!("{o}/annotations"),
        "--voc_out_name",
        "test.json",
    ]);
    assert!(
        run.status.success(),
        "{}",
        String::from_utf8_lossy(&run.stderr)
    );
    let coco = pulsefocus(&[
        "dataset",
        "check",
        "--dataset-type",
        "coco",
        "--dataset-dir",
        o,
        "--image-dir",
        "JPEGImages",
        "--anno-path",
        "annotations/test.json",
        "--json",
    ]);
    let voc = pulsefocus(&[
        "dataset",
        "check",
        "--dataset-type",
        "voc",
        "--dataset-dir",
        o,
        "--anno-path",
        "test.txt",
        "--json",
    ]);
    let (coco, voc) = (stdout_json(&coco), stdout_json(&voc));
    assert_eq!(coco["images"], 6);
    assert_eq!(coco["boxes"], voc["boxes"]);
    assert_eq!(coco["per_class"], voc["per_class"]);

    let run = pulsefocus(&["x2coco", "--dataset_type", "voc", "--voc_anno_dir", o]);
    assert!(!run.status.success());
    assert!(String::from_utf8_lossy(&run.stderr).contains("--voc_anno_list"));
}

/// `pulsefocus dataset check -c CONFIG ...` run from `dir`, where the
/// config's relative dataset paths resolve as they do for `train`.
fn check_config_in(dir: &Path, config: &str, extra: &[&str]) -> Output {
    let config = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../configs")
        .join(config);
    Command::new(env!("CARGO_BIN_EXE_pulsefocus"))
        .current_dir(dir)
        .args(["dataset", "check", "-c", config.to_str().unwrap()])
        .args(extra)
        .output()
        .unwrap()
}

/// (file name, where, what) of each problem of one report.
fn problems(report: &serde_json::Value) -> Vec<(String, String, String)> {
    report["problems"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| {
            let file = Path::new(p["file"].as_str().unwrap());
            (
                file.file_name().unwrap().to_string_lossy().into_owned(),
                p["where"].as_str().unwrap().to_string(),
                p["what"].as_str().unwrap().to_string(),
            )
        })
        .collect()
}

#[test]
fn config_check_reads_train_and_eval_datasets_like_training() {
    let dir = tempfile::tempdir().unwrap();
    // demo.ron trains on dataset/synth (3 classes), relative to the working directory.
    synth(&dir.path().join("dataset/synth"), &["--classes", "3"]);
    let run = check_config_in(dir.path(), "demo.ron", &["--json"]);
    assert!(
        run.status.success(),
        "{}",
        String::from_utf8_lossy(&run.stderr)
    );
    let report = stdout_json(&run);
    let sections: Vec<&String> = report.as_object().unwrap().keys().collect();
    // Its TestReader is an ImageFolder with the default labels: no file to
    // check. (The JSON map sorts keys; the text below shows the order.)
    assert_eq!(sections, ["EvalReader", "TrainReader"]);
    assert_eq!(report["TrainReader"]["images"], 24);
    assert_eq!(report["EvalReader"]["images"], 6);

    // The same report as the options form gives for the same dataset.
    let d = dir.path().join("dataset/synth");
    let by_options = pulsefocus(&[
        "dataset",
        "check",
        "--dataset-type",
        "voc",
        "--dataset-dir",
        d.to_str().unwrap(),
        "--anno-path",
        "trainval.txt",
        "--json",
    ]);
    let mut by_options = stdout_json(&by_options);
    by_options["name"] = "TrainReader".into();
    assert_eq!(report["TrainReader"], by_options);

    let text = check_config_in(dir.path(), "demo.ron", &[]);
    let text = String::from_utf8_lossy(&text.stdout);
    assert!(text.starts_with("TrainReader\n  images: 24"), "{text}");
    assert!(text.contains("\nEvalReader\n  images: 6"), "{text}");
}

#[test]
fn config_check_fails_clearly_on_a_missing_annotation_file() {
    let dir = tempfile::tempdir().unwrap();
    synth(&dir.path().join("dataset/synth"), &["--classes", "3"]);
    let run = check_config_in(
        dir.path(),
        "demo.ron",
        &["-o", "TrainReader.dataset.anno_path=nosuch.txt", "--json"],
    );
    assert!(!run.status.success());
    let stderr = String::from_utf8_lossy(&run.stderr);
    assert!(stderr.contains("1 error(s) found"), "{stderr}");
    assert!(!stderr.contains("panicked"), "{stderr}");
    // The error line names the file (it used to be in the report only).
    assert_eq!(stderr.lines().count(), 1, "{stderr}");
    assert!(
        stderr.starts_with("error: dataset/synth/nosuch.txt: "),
        "{stderr}"
    );
    let report = stdout_json(&run);
    let train = problems(&report["TrainReader"]);
    assert_eq!(train.len(), 1, "{train:?}");
    assert_eq!(train[0].0, "nosuch.txt");
    assert!(train[0].2.starts_with("error:"), "{train:?}");
    // The eval dataset is still read and reported.
    assert_eq!(report["EvalReader"]["images"], 6);
    assert!(problems(&report["EvalReader"]).is_empty());
}

#[test]
fn config_check_names_the_files_behind_a_wrong_class_count() {
    let dir = tempfile::tempdir().unwrap();
    synth(&dir.path().join("dataset/synth"), &["--classes", "3"]);
    let run = check_config_in(dir.path(), "demo.ron", &["-o", "num_classes=5", "--json"]);
    assert!(!run.status.success());
    let stderr = String::from_utf8_lossy(&run.stderr);
    assert!(stderr.contains("2 error(s) found"), "{stderr}");
    assert!(
        stderr.starts_with("error: ")
            && stderr.contains("demo.ron (key num_classes): the config says 5"),
        "{stderr}"
    );
    let report = stdout_json(&run);
    for section in ["TrainReader", "EvalReader"] {
        // The dataset itself reads fine; the config does not fit it.
        assert!(report[section]["images"].as_u64().unwrap() > 0);
        let found = problems(&report[section]);
        assert_eq!(found.len(), 1, "{found:?}");
        let (file, place, what) = &found[0];
        assert_eq!(
            (file.as_str(), place.as_str()),
            ("demo.ron", "key num_classes")
        );
        assert!(
            what.contains("says 5 classes but dataset/synth/label_list.txt names 3"),
            "{what}"
        );
        assert!(what.contains("set -o num_classes=3"), "{what}");
    }
}

#[test]
fn config_check_fails_on_a_dataset_without_usable_images() {
    let dir = tempfile::tempdir().unwrap();
    synth(&dir.path().join("dataset/synth"), &["--classes", "3"]);
    fs::write(dir.path().join("dataset/synth/none.txt"), "").unwrap();
    let run = check_config_in(
        dir.path(),
        "demo.ron",
        &["-o", "EvalReader.dataset.anno_path=none.txt", "--json"],
    );
    assert!(!run.status.success());
    let report = stdout_json(&run);
    let eval = problems(&report["EvalReader"]);
    assert_eq!(eval.len(), 1, "{eval:?}");
    assert_eq!(eval[0].0, "none.txt");
    assert!(eval[0].2.contains("no usable images"), "{eval:?}");
    assert_eq!(report["TrainReader"]["errors"], 0);
}

#[test]
fn config_check_reads_a_coco_config_and_the_test_readers_class_names() {
    let dir = tempfile::tempdir().unwrap();
    synth(&dir.path().join("data"), &["--classes", "3"]);
    let mut options = vec!["num_classes=3".to_string()];
    for (reader, anno) in [("TrainReader", "train"), ("EvalReader", "val")] {
        options.push(format!("{reader}.dataset.dataset_dir=data"));
        options.push(format!("{reader}.dataset.image_dir=JPEGImages"));
        options.push(format!(
            "{reader}.dataset.anno_path=annotations/instances_{anno}.json"
        ));
    }
    options.push("TestReader.dataset.anno_path=data/annotations/instances_val.json".into());
    let mut args = vec!["--json", "-o"];
    args.extend(options.iter().map(String::as_str));
    let run = check_config_in(dir.path(), "yolov3_mobilenet_v1_coco.ron", &args);
    assert!(
        run.status.success(),
        "{}",
        String::from_utf8_lossy(&run.stderr)
    );
    let report = stdout_json(&run);
    assert_eq!(report["TrainReader"]["images"], 24);
    assert_eq!(report["EvalReader"]["images"], 6);
    // The TestReader's ImageFolder gives only its class names (as `infer` reads it).
    let test = &report["TestReader"];
    let names = |r: &serde_json::Value| -> Vec<String> {
        r["per_class"]
            .as_object()
            .unwrap()
            .keys()
            .cloned()
            .collect()
    };
    assert_eq!(names(test), names(&report["EvalReader"]));
    assert_eq!((&test["images"], &test["boxes"]), (&0.into(), &0.into()));
    assert_eq!(test["errors"], 0);

    // A TestReader naming the wrong categories is a problem too.
    options.push("num_classes=4".into());
    let mut args = vec!["--json", "-o"];
    args.extend(options.iter().map(String::as_str));
    let run = check_config_in(dir.path(), "yolov3_mobilenet_v1_coco.ron", &args);
    assert!(!run.status.success());
    let report = stdout_json(&run);
    let test = problems(&report["TestReader"]);
    assert_eq!(test.len(), 1, "{test:?}");
    assert!(test[0].2.contains("instances_val.json names 3"), "{test:?}");
}

#[test]
fn check_needs_a_config_or_a_dataset_type_but_not_both() {
    let neither = pulsefocus(&["dataset", "check"]);
    assert_eq!(neither.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&neither.stderr);
    assert!(
        stderr.contains("--config <CONFIG>|--dataset-type"),
        "{stderr}"
    );

    let both = pulsefocus(&["dataset", "check", "-c", "a.ron", "--dataset-type", "voc"]);
    assert_eq!(both.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&both.stderr);
    assert!(stderr.contains("cannot be used with"), "{stderr}");

    let incomplete = pulsefocus(&["dataset", "check", "--dataset-type", "voc"]);
    assert!(!incomplete.status.success());
    let stderr = String::from_utf8_lossy(&incomplete.stderr);
    assert!(
        stderr.contains("needs --dataset-dir and --anno-path"),
        "{stderr}"
    );
}
