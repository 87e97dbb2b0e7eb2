use std::fs;
use std::path::{Path, PathBuf};

use super::*;

fn configs_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../configs")
}

fn overrides(args: &[&str]) -> Vec<Override> {
    let args: Vec<String> = args.iter().map(|s| s.to_string()).collect();
    parse_overrides(&args).unwrap()
}

/// A minimal valid config in a temporary folder, plus extra files.
fn write_configs(files: &[(&str, &str)]) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    for (name, text) in files {
        let path = dir.path().join(name);
        fs::create_dir_all(path.parent().unwrap()).unwrap();
        fs::write(path, text).unwrap();
    }
    dir
}

const MINIMAL: &str = r#"(
    architecture: "YOLOv3",
    num_classes: 4,
    max_iters: 10,
    TrainReader: (dataset: VOCDataSet(dataset_dir: "d"), batch_size: 2, sample_transforms: [DecodeImage(), NormalizeBox(), PadBox(), BboxXYXY2XYWH()], batch_transforms: [RandomShape(sizes: [320]), NormalizeImage(), Permute()]),
)"#;

#[test]
fn every_shipped_config_loads() {
    let mut count = 0;
    for entry in fs::read_dir(configs_dir()).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().is_some_and(|e| e == "ron") {
            let config = load(&path, &[]).unwrap_or_else(|e| panic!("{e}"));
            assert!(ARCHITECTURES.contains(&config.architecture.as_str()));
            count += 1;
        }
    }
    assert!(count >= 6, "found {count} configs");
}

#[test]
fn shipped_voc_config_has_the_paddle_defaults() {
    let c = load(&configs_dir().join("yolov3_darknet_voc.ron"), &[]).unwrap();
    assert_eq!(c.num_classes, 20);
    assert_eq!(c.yolov3.backbone, "DarkNet");
    assert_eq!(c.yolov3_head, YOLOv3Head::default());
    assert_eq!(c.learning_rate, LearningRate::default());
    assert_eq!(c.optimizer_builder, OptimizerBuilder::default());
    assert_eq!((c.max_iters, c.snapshot_iter), (70000, 2000));
    assert_eq!(c.train_reader.batch_size, 8);
    assert_eq!(c.train_reader.mixup_epoch, 250);
    let DataSet::VOCDataSet(voc) = &c.train_reader.dataset else {
        panic!("{:?}", c.train_reader.dataset)
    };
    assert_eq!(voc.anno_path, "trainval.txt");
    assert_eq!(c.train_reader.sample_transforms.len(), 9);
    assert_eq!(c.exclude_patterns().unwrap(), ["yolo_output"]);
    let coco = load(&configs_dir().join("yolov3_mobilenet_v1_coco.ron"), &[]).unwrap();
    assert_eq!(coco.num_classes, 80);
    assert!(matches!(coco.train_reader.dataset, DataSet::COCODataSet(_)));
}

#[test]
fn overrides_set_nested_keys() {
    let c = load(
        &configs_dir().join("yolov3_mobilenet_v1_voc.ron"),
        &overrides(&[
            "TrainReader.batch_size=4",
            "LearningRate.base_lr=0.0005",
            "finetune_exclude_pretrained_params=['cls_score','bbox_pred']",
            "pretrain_weights=https://example.com/a/b.tar",
            "TrainReader.dataset.dataset_dir=custom_data/voc",
            "num_classes=3",
        ]),
    )
    .unwrap();
    assert_eq!(c.train_reader.batch_size, 4);
    assert_eq!(c.learning_rate.base_lr, 0.0005);
    assert_eq!(
        c.finetune_exclude_pretrained_params,
        ["cls_score", "bbox_pred"]
    );
    assert_eq!(
        c.pretrain_weights.as_deref(),
        Some("https://example.com/a/b.tar")
    );
    let DataSet::VOCDataSet(voc) = &c.train_reader.dataset else {
        panic!()
    };
    assert_eq!(voc.dataset_dir, "custom_data/voc");
    assert_eq!(
        voc.anno_path, "trainval.txt",
        "the rest of the dataset stays"
    );
    assert_eq!(c.num_classes, 3);
}

#[test]
fn unknown_key_lists_the_closest_keys() {
    let dir = write_configs(&[("c.ron", MINIMAL)]);
    let path = dir.path().join("c.ron");
    let err = load(&path, &overrides(&["TrainReader.batchsize=4"])).unwrap_err();
    let msg = err.to_string();
    assert!(msg.contains("unknown key 'batchsize'"), "{msg}");
    assert!(msg.contains("closest valid keys: batch_size"), "{msg}");
    assert!(msg.contains("set by -o TrainReader.batchsize"), "{msg}");

    let err = load(&path, &overrides(&["LearningRat.base_lr=1"])).unwrap_err();
    assert!(
        err.to_string().contains("closest valid keys: LearningRate"),
        "{err}"
    );

    let typo = MINIMAL.replace("max_iters", "max_iter");
    let dir = write_configs(&[("c.ron", &typo)]);
    let err = load(&dir.path().join("c.ron"), &[]).unwrap_err();
    assert!(
        err.to_string()
            .contains("(key max_iter): unknown key 'max_iter'; closest valid keys: max_iters"),
        "{err}"
    );
}

#[test]
fn wrong_type_names_key_and_type() {
    let dir = write_configs(&[("c.ron", MINIMAL)]);
    let path = dir.path().join("c.ron");
    let err = load(&path, &overrides(&["TrainReader.batch_size=four"])).unwrap_err();
    let msg = err.to_string();
    assert!(msg.contains("key TrainReader.batch_size"), "{msg}");
    assert!(msg.contains("wrong type: expected integer"), "{msg}");
    let err = load(&path, &overrides(&["use_gpu=3"])).unwrap_err();
    assert!(err.to_string().contains("key use_gpu"), "{err}");
    assert!(err.to_string().contains("boolean"), "{err}");
    let err = load(&path, &overrides(&["TrainReader.dataset=Nope(x: 1)"])).unwrap_err();
    assert!(err.to_string().contains("key TrainReader.dataset"), "{err}");
}

/// ron's syntax words (`expected comma`, `expected opening [`, `integer is
/// out of bounds`) used to stand where the expected type belongs.
#[test]
fn wrong_type_names_the_type_not_ron_syntax() {
    let dir = write_configs(&[("c.ron", MINIMAL)]);
    let path = dir.path().join("c.ron");
    for (arg, key, expected) in [
        (
            "max_iters=1.5",
            "key max_iters",
            "wrong type: expected integer",
        ),
        (
            "TrainReader.batch_size=4.5",
            "key TrainReader.batch_size",
            "expected integer",
        ),
        (
            "snapshot_iter=-1",
            "key snapshot_iter",
            "expected non-negative integer",
        ),
        (
            "YOLOv3Head.anchors=3",
            "key YOLOv3Head.anchors",
            "wrong type: expected list",
        ),
        (
            "YOLOv3Head.anchors=[1,2]",
            "key YOLOv3Head.anchors",
            "expected list",
        ),
        (
            "finetune_exclude_pretrained_params=3",
            "key finetune_exclude_pretrained_params",
            "expected list",
        ),
        ("LearningRate=3", "key LearningRate", "expected section"),
    ] {
        let msg = load(&path, &overrides(&[arg])).unwrap_err().to_string();
        assert!(msg.contains(key) && msg.contains(expected), "{arg}: {msg}");
    }
    let in_file = MINIMAL.replace("max_iters: 10", "max_iters: 2.5");
    let dir = write_configs(&[("c.ron", &in_file)]);
    let msg = load(&dir.path().join("c.ron"), &[])
        .unwrap_err()
        .to_string();
    assert!(
        msg.contains("(key max_iters): wrong type: expected integer"),
        "{msg}"
    );
}

/// `-o finetune_exclude_pretrained_params=preset` (one pattern, no list)
/// was a type error; it is the one-pattern list.
#[test]
fn one_exclusion_pattern_may_be_given_without_a_list() {
    let dir = write_configs(&[("c.ron", MINIMAL)]);
    let path = dir.path().join("c.ron");
    let c = load(
        &path,
        &overrides(&["finetune_exclude_pretrained_params=preset"]),
    )
    .unwrap();
    assert_eq!(c.finetune_exclude_pretrained_params, ["preset"]);
    assert_eq!(c.exclude_patterns().unwrap(), ["yolo_output"]);
    let in_file = MINIMAL.replace(
        "max_iters: 10,",
        "max_iters: 10, finetune_exclude_pretrained_params: \"yolo_output.0\",",
    );
    let dir = write_configs(&[("c.ron", &in_file)]);
    let c = load(&dir.path().join("c.ron"), &[]).unwrap();
    assert_eq!(c.finetune_exclude_pretrained_params, ["yolo_output.0"]);
}

/// docs/configs.md: flow maps are "merged like a section". They replaced the
/// section instead: `TrainReader.dataset={...}` lost its kind (`expected
/// identifier`) and `LearningRate={base_lr: ...}` its schedulers.
#[test]
fn flow_map_merges_into_the_section() {
    let dir = write_configs(&[("c.ron", MINIMAL)]);
    let path = dir.path().join("c.ron");
    let c = load(
        &path,
        &overrides(&["TrainReader.dataset={dataset_dir: custom, anno_path: a.txt}"]),
    )
    .unwrap();
    let DataSet::VOCDataSet(voc) = &c.train_reader.dataset else {
        panic!("{:?}", c.train_reader.dataset);
    };
    assert_eq!(
        (voc.dataset_dir.as_str(), voc.anno_path.as_str()),
        ("custom", "a.txt")
    );
    let with_lr = MINIMAL.replace(
        "max_iters: 10,",
        "max_iters: 10, LearningRate: (base_lr: 0.1, schedulers: [LinearWarmup(start_factor: 0.5, steps: 3)]),",
    );
    let dir = write_configs(&[("c.ron", &with_lr)]);
    let path = dir.path().join("c.ron");
    let base = load(&path, &[]).unwrap();
    let c = load(&path, &overrides(&["LearningRate={base_lr: 0.5}"])).unwrap();
    assert_eq!(c.learning_rate.base_lr, 0.5);
    assert_eq!(c.learning_rate.schedulers, base.learning_rate.schedulers);
    assert_eq!(c.learning_rate.schedulers.len(), 1);
}

#[test]
fn values_checked_beyond_types() {
    let dir = write_configs(&[("c.ron", MINIMAL)]);
    let path = dir.path().join("c.ron");
    let err = load(&path, &overrides(&["YOLOv3.backbone=ResNet"])).unwrap_err();
    assert!(err.to_string().contains("key YOLOv3.backbone"), "{err}");
    assert!(err.to_string().contains("MobileNet, DarkNet"), "{err}");
    let err = load(
        &path,
        &overrides(&["YOLOv3Head.anchor_masks=[[0,1],[2,9],[3]]"]),
    )
    .unwrap_err();
    assert!(err.to_string().contains("anchor_masks[1]"), "{err}");
    let err = load(&path, &overrides(&["YOLOv3Head.anchors=[[1,2,3]]"])).unwrap_err();
    assert!(err.to_string().contains("anchors[0]"), "{err}");
}

#[test]
fn bases_merge_in_order_and_relative_to_the_file() {
    let dir = write_configs(&[
        (
            "base/a.ron",
            r#"(num_classes: 1, max_iters: 5, TrainReader: (batch_size: 3, shuffle: true, sample_transforms: [DecodeImage(), NormalizeBox(), PadBox(), BboxXYXY2XYWH()], batch_transforms: [RandomShape(sizes: [320]), NormalizeImage(), Permute()]))"#,
        ),
        (
            "base/b.ron",
            r#"(_BASE_: ["a.ron"], num_classes: 2, TrainReader: (dataset: VOCDataSet(dataset_dir: "x")))"#,
        ),
        (
            "c.ron",
            r#"(_BASE_: ["base/b.ron"], architecture: "YOLOv3", TrainReader: (shuffle: false))"#,
        ),
    ]);
    let c = load(&dir.path().join("c.ron"), &[]).unwrap();
    assert_eq!((c.num_classes, c.max_iters), (2, 5));
    assert_eq!(c.train_reader.batch_size, 3);
    assert!(!c.train_reader.shuffle);
}

#[test]
fn bad_files_are_clear_errors() {
    let dir = write_configs(&[
        ("missing_base.ron", r#"(_BASE_: ["nope.ron"])"#),
        ("loop_a.ron", r#"(_BASE_: ["loop_b.ron"])"#),
        ("loop_b.ron", r#"(_BASE_: ["loop_a.ron"])"#),
        (
            "syntax.ron",
            "(architecture: \"YOLOv3\",\n num_classes: 4 4)",
        ),
    ]);
    let err = load(&dir.path().join("missing_base.ron"), &[]).unwrap_err();
    assert!(
        err.to_string()
            .contains("missing_base.ron (_BASE_): base file"),
        "{err}"
    );
    assert!(err.to_string().contains("nope.ron not found"), "{err}");
    let err = load(&dir.path().join("loop_a.ron"), &[]).unwrap_err();
    assert!(err.to_string().contains("includes itself"), "{err}");
    let err = load(&dir.path().join("syntax.ron"), &[]).unwrap_err();
    assert!(
        err.to_string().contains("syntax.ron (line 2, column 17)"),
        "{err}"
    );
    let err = load(&dir.path().join("absent.ron"), &[]).unwrap_err();
    assert!(err.to_string().contains("absent.ron"), "{err}");
    let dir = write_configs(&[("c.ron", r#"(architecture: "YOLOv3", num_classes: 4)"#)]);
    let err = load(&dir.path().join("c.ron"), &[]).unwrap_err();
    assert!(
        err.to_string().contains("missing required key 'max_iters'"),
        "{err}"
    );
}

#[test]
fn edit_distance_and_closest() {
    assert_eq!(edit_distance("kitten", "sitting"), 3);
    assert_eq!(edit_distance("", "abc"), 3);
    assert_eq!(
        closest("batchsize", &["shuffle", "batch_size", "bufsize"])[0],
        "batch_size"
    );
}

#[test]
fn model_spec_follows_the_config() {
    use crate::models::Yolov3Spec;
    let c = load(&configs_dir().join("yolov3_darknet_voc.ron"), &[]).unwrap();
    assert_eq!(c.yolov3_spec(), Yolov3Spec::darknet53(20));
    assert_eq!(c.yolov3_spec().param_specs().len(), 366);
    let c = load(&configs_dir().join("yolov3_mobilenet_v1_coco.ron"), &[]).unwrap();
    assert_eq!(c.yolov3_spec(), Yolov3Spec::mobilenet_v1(80));
    assert_eq!(c.yolov3_spec().param_specs().len(), 241);
    let c = load(&configs_dir().join("demo.ron"), &[]).unwrap();
    assert_eq!(c.yolov3_spec(), Yolov3Spec::small(3));
}

/// Every shipped config, converted to RON and to YAML by `config convert` /
/// `config show`, loads back to the same config.
#[test]
fn show_and_convert_round_trip_every_shipped_config() {
    let dir = tempfile::tempdir().unwrap();
    for entry in fs::read_dir(configs_dir()).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().is_none_or(|e| e != "ron") {
            continue;
        }
        let config = load(&path, &[]).unwrap();
        let ron_path = dir.path().join("converted.ron");
        fs::write(&ron_path, to_ron(&config)).unwrap();
        let from_ron = load(&ron_path, &[]).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(from_ron, config, "{}", path.display());
        let yaml_path = dir.path().join("shown.yml");
        fs::write(&yaml_path, to_yaml(&config)).unwrap();
        let from_yaml = load(&yaml_path, &[]).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(from_yaml, config, "{}", path.display());
    }
}

/// `config show` of an SSD config leaves out the YOLOv3 sections it does
/// not set, and keeps those it sets (with their warning).
#[test]
fn shown_ssd_configs_leave_out_unset_yolov3_sections() {
    let path = configs_dir().join("ssd_mobilenet_v1_voc.ron");
    let shown = to_ron(&load(&path, &[]).unwrap());
    for section in ["YOLOv3", "YOLOv3Head", "YOLOv3Loss", "DarkNet"] {
        assert!(!shown.contains(&format!("    {section}: (")), "{shown}");
    }
    assert!(shown.contains("    MultiBoxHead: (") && shown.contains("    TrainReader: ("));
    let set = load(&path, &overrides(&["YOLOv3Loss.ignore_thresh=0.5"])).unwrap();
    let dir = write_configs(&[("shown.ron", &to_ron(&set))]);
    let back = load(&dir.path().join("shown.ron"), &[]).unwrap();
    assert_eq!(back, set);
    assert_eq!(back.yolov3_loss.ignore_thresh, 0.5);
    // A YOLOv3 config shows every section it reads.
    let yolo = to_ron(&load(&configs_dir().join("yolov3_darknet_voc.ron"), &[]).unwrap());
    assert!(yolo.contains("    YOLOv3Loss: (") && yolo.contains("    DarkNet: ("));
}

/// `MINIMAL` as PaddleDetection writes it.
const MINIMAL_YAML: &str = "architecture: YOLOv3\nnum_classes: 4\nmax_iters: 10\n\
    TrainReader:\n  batch_size: 2\n  dataset:\n    !VOCDataSet\n    dataset_dir: d\n\
    \x20 sample_transforms: [!DecodeImage {}, !NormalizeBox {}, !PadBox {}, !BboxXYXY2XYWH {}]\n\
    \x20 batch_transforms: [!RandomShape {sizes: [320]}, !NormalizeImage {}, !Permute {}]\n";

#[test]
fn yaml_config_loads_like_its_ron_twin() {
    let dir = write_configs(&[("c.yml", MINIMAL_YAML), ("c.ron", MINIMAL)]);
    let from_yaml = load(&dir.path().join("c.yml"), &[]).unwrap();
    let from_ron = load(&dir.path().join("c.ron"), &[]).unwrap();
    assert_eq!(from_yaml, from_ron);
    // -o applies to YAML exactly as to RON.
    let o = overrides(&["TrainReader.dataset.dataset_dir=e", "max_iters=7"]);
    let from_yaml = load(&dir.path().join("c.yml"), &o).unwrap();
    assert_eq!(from_yaml, load(&dir.path().join("c.ron"), &o).unwrap());
    assert_eq!(from_yaml.max_iters, 7);
}

/// PaddleDetection's `load_config`: the `_READER_` file first, the config
/// over it; a plain map merges key by key, a tagged object replaces whole.
#[test]
fn yaml_reader_include_and_paddle_merge_rule() {
    let dir = write_configs(&[
        (
            "readers/reader.yml",
            &MINIMAL_YAML
                .replace("batch_size: 2", "batch_size: 8\n  shuffle: false")
                .replace(
                    "!VOCDataSet\n    dataset_dir: d",
                    "!COCODataSet\n    image_dir: train2017\n    \
                     anno_path: annotations/custom.json\n    dataset_dir: dataset/coco",
                ),
        ),
        (
            "c.yml",
            "architecture: YOLOv3\nnum_classes: 4\nmax_iters: 10\n_READER_: 'readers/reader.yml'\n\
             TrainReader:\n  shuffle: true\n  dataset:\n    !COCODataSet\n    dataset_dir: mine\n",
        ),
    ]);
    let c = load(&dir.path().join("c.yml"), &[]).unwrap();
    assert_eq!(c.train_reader.batch_size, 8);
    assert!(c.train_reader.shuffle);
    let DataSet::COCODataSet(coco) = &c.train_reader.dataset else {
        panic!("{:?}", c.train_reader.dataset)
    };
    assert_eq!(coco.dataset_dir, "mine");
    // Not inherited from the reader's COCODataSet: the class default.
    assert_ne!(coco.anno_path, "annotations/custom.json");
}

#[test]
fn bad_yaml_configs_are_one_line_errors() {
    let dir = write_configs(&[
        (
            "tabs.yml",
            "architecture: YOLOv3\nTrainReader:\n\tbatch_size: 2\n",
        ),
        (
            "tag.yml",
            &MINIMAL_YAML.replace("!VOCDataSet", "!NoSuchThing"),
        ),
        ("missing.yml", "_READER_: nope.yml\n"),
        ("loop_a.yml", "_READER_: loop_b.yml\n"),
        ("loop_b.yml", "_READER_: loop_a.yml\n"),
        (
            "type.yml",
            &MINIMAL_YAML.replace("max_iters: 10", "max_iters: ten"),
        ),
        ("yaml_named.ron", MINIMAL_YAML),
        ("ron_named.yml", MINIMAL),
    ]);
    let error = |name: &str| {
        let e = load(&dir.path().join(name), &[]).unwrap_err().to_string();
        assert!(!e.contains('\n'), "{e}");
        assert!(e.contains(name), "{e}");
        e
    };
    assert!(error("tabs.yml").contains("line 3"));
    assert!(error("tag.yml").contains("NoSuchThing"));
    assert!(error("missing.yml").contains("(_READER_): reader file"));
    assert!(error("loop_a.yml").contains("includes itself"));
    assert!(error("type.yml").contains("max_iters"));
    assert!(error("yaml_named.ron").contains("looks like YAML: name it .yml"));
    assert!(error("ron_named.yml").contains("looks like RON: name it .ron"));
}

fn ppdet_fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../tests/fixtures/ppdet_configs")
        .join(name)
}

/// Every key of PaddleDetection's YOLOv3 configs is read: those that change
/// nothing here are named by `warnings`, one line each.
#[test]
fn real_yolov3_yaml_configs_load_and_name_keys_without_effect() {
    for name in [
        "yolov3_mobilenet_v1.yml",
        "yolov3_darknet.yml",
        "yolov3_mobilenet_v1_voc.yml",
        "yolov3_darknet_voc.yml",
        "yolov3_mobilenet_v1_fruit.yml",
    ] {
        let c = load(&ppdet_fixture(name), &[]).unwrap_or_else(|e| panic!("{e}"));
        let warnings = c.warnings().join("\n");
        assert!(warnings.contains("use_gpu has no effect"), "{warnings}");
        assert!(
            warnings.contains("inputs_def.fields (TrainReader, EvalReader, TestReader)"),
            "{warnings}"
        );
        let gt2yolo = "TrainReader.batch_transforms[3].Gt2YoloTarget has no effect";
        // The fruit config lists its own batch_transforms, without it.
        assert_eq!(
            warnings.contains(gt2yolo),
            !name.contains("fruit"),
            "{warnings}"
        );
        assert_eq!(c.log_iter, 20);
        // ignore_thresh and label_smooth come from YOLOv3Loss, as there.
        let yolo = c.yolo_config();
        assert_eq!(yolo.ignore_thresh, 0.7);
        assert_eq!(yolo.label_smooth, !name.contains("_voc"), "{name}");
    }
    let fruit = load(&ppdet_fixture("yolov3_mobilenet_v1_fruit.yml"), &[]).unwrap();
    assert_eq!(fruit.train_reader.mixup_epoch, -1);
    let file = Path::new("fruit.yml");
    let pipeline = fruit
        .train_reader
        .pipeline_for(file, "TrainReader", Architecture::YOLOv3)
        .unwrap();
    use crate::data::transforms::random_expand::ExpandParams;
    use crate::data::transforms::Augment;
    assert_eq!(
        pipeline.sample.steps,
        vec![
            // ExpandImage: prob is the chance of expanding; a uint8 canvas.
            Augment::Expand(ExpandParams {
                max_ratio: 4.0,
                skip_probability: 0.5,
                fill: [123.0, 116.0, 103.0],
            }),
            Augment::RandomInterpResize(608),
            Augment::Flip(0.5),
        ]
    );
    // The shipped RON configs leave out the keys without effect.
    for entry in fs::read_dir(configs_dir()).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().is_some_and(|e| e == "ron") {
            let c = load(&path, &[]).unwrap();
            assert_eq!(c.warnings(), Vec::<String>::new(), "{}", path.display());
        }
    }
}

/// Keys and values that would change training and are not implemented are
/// errors naming the file, the key and what is supported.
#[test]
fn unimplemented_yolov3_keys_are_errors() {
    let fruit = ppdet_fixture("yolov3_mobilenet_v1_fruit.yml");
    let cases: &[(&[&str], &str, &str)] = &[
        (
            &["use_fine_grained_loss=true"],
            "key use_fine_grained_loss",
            "(supported: false)",
        ),
        (
            &["YOLOv3Loss.use_fine_grained_loss=true"],
            "key YOLOv3Loss.use_fine_grained_loss",
            "(supported: false)",
        ),
        (
            &["YOLOv3Head.yolo_loss=IouLoss"],
            "key YOLOv3Head.yolo_loss",
            "(supported: YOLOv3Loss)",
        ),
        (
            &["MobileNet.norm_type=affine_channel"],
            "key MobileNet.norm_type",
            "(supported: bn, sync_bn)",
        ),
        (
            &["MobileNet.norm_decay=0.0005"],
            "key MobileNet.norm_decay",
            "(supported: 0)",
        ),
        (
            &["MobileNet.with_extra_blocks=true"],
            "key MobileNet.with_extra_blocks",
            "(supported: false)",
        ),
        (
            &["MobileNet.conv_learning_rate=0.1"],
            "key MobileNet.conv_learning_rate",
            "(supported: 1)",
        ),
    ];
    for (o, key, supported) in cases {
        let e = load(&fruit, &overrides(o)).unwrap_err().to_string();
        assert!(e.contains("yolov3_mobilenet_v1_fruit.yml"), "{e}");
        assert!(e.contains(key), "{key}: {e}");
        assert!(e.contains(supported), "{supported}: {e}");
    }
    // Transform parameters, edited in a copy of the file.
    let text = fs::read_to_string(&fruit).unwrap();
    let reader = fs::read_to_string(ppdet_fixture("yolov3_reader.yml")).unwrap();
    let edits = [
        (
            "max_size: 0",
            "max_size: 1333",
            "key TrainReader.sample_transforms[3].RandomInterpImage.max_size): must be 0",
        ),
        (
            "max_ratio: 4.0",
            "max_ratio: 0.5",
            "key TrainReader.sample_transforms[2].ExpandImage.max_ratio): must be at least 1",
        ),
    ];
    for (from, to, want) in edits {
        let edited = text.replace(from, to);
        let dir = write_configs(&[("fruit.yml", &edited), ("yolov3_reader.yml", &reader)]);
        let e = load(&dir.path().join("fruit.yml"), &[])
            .unwrap_err()
            .to_string();
        assert!(e.contains("fruit.yml (") && e.contains(want), "{want}: {e}");
    }
    // Where pulsefocus used to read the loss keys.
    let e = load(&fruit, &overrides(&["YOLOv3Head.label_smooth=false"]))
        .unwrap_err()
        .to_string();
    assert!(e.contains("it belongs in the YOLOv3Loss section"), "{e}");
    // ExpandImage works on 0..1 boxes: before NormalizeBox is an error.
    let dir = write_configs(&[(
        "c.yml",
        &MINIMAL_YAML.replace(
            "!DecodeImage {}, ",
            "!DecodeImage {}, !ExpandImage {max_ratio: 2, prob: 0.5}, ",
        ),
    )]);
    let e = load(&dir.path().join("c.yml"), &[])
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("sample_transforms[1].ExpandImage): must come after NormalizeBox"),
        "{e}"
    );
}

/// What PaddleDetection's `load_config` resolved for a fixture, and the
/// parameters its train program creates (`make_fixtures.py`).
fn ppdet_json(stem: &str, kind: &str) -> serde_json::Value {
    let text = fs::read_to_string(ppdet_fixture(&format!("{stem}.{kind}.json"))).unwrap();
    serde_json::from_str(&text).unwrap()
}

/// Walks our config (as JSON) beside PaddleDetection's: every value both
/// have must agree (numbers to f32 precision). Keys only PaddleDetection has
/// go to `theirs_only` with their values; returns the number of values
/// compared.
fn compare_values(
    path: &str,
    ours: &serde_json::Value,
    theirs: &serde_json::Value,
    failures: &mut Vec<String>,
    theirs_only: &mut Vec<(String, serde_json::Value)>,
) -> usize {
    use serde_json::Value;
    match (ours, theirs) {
        (Value::Object(o), Value::Object(t)) => t
            .iter()
            .map(|(key, tv)| match o.get(key) {
                Some(ov) => compare_values(&format!("{path}.{key}"), ov, tv, failures, theirs_only),
                None => {
                    theirs_only.push((key.clone(), tv.clone()));
                    0
                }
            })
            .sum(),
        (Value::Array(o), Value::Array(t)) if o.len() == t.len() => o
            .iter()
            .zip(t)
            .enumerate()
            .map(|(i, (ov, tv))| {
                compare_values(&format!("{path}[{i}]"), ov, tv, failures, theirs_only)
            })
            .sum(),
        (Value::Number(o), Value::Number(t)) => {
            let (o, t) = (o.as_f64().unwrap(), t.as_f64().unwrap());
            if (o - t).abs() > 1e-6 * t.abs().max(1.0) {
                failures.push(format!("{path}: ours {o}, PaddleDetection {t}"));
            }
            1
        }
        // An absent path: None there, empty here.
        (Value::String(o), Value::Null) if o.is_empty() => 1,
        _ => {
            if ours != theirs {
                failures.push(format!("{path}: ours {ours}, PaddleDetection {theirs}"));
            }
            1
        }
    }
}

/// Each PaddleDetection YAML plans with exactly the parameters (names,
/// shapes, order) PaddleDetection's train program creates for it, and
/// resolves to the values `load_config` returns.
#[test]
fn ppdet_yaml_fixtures_match_paddledetections_own_code() {
    for stem in [
        "yolov3_mobilenet_v1",
        "yolov3_darknet",
        "yolov3_mobilenet_v1_voc",
        "yolov3_darknet_voc",
        "yolov3_mobilenet_v1_fruit",
    ] {
        let config = load(&ppdet_fixture(&format!("{stem}.yml")), &[]).unwrap();

        let ours: Vec<(String, Vec<usize>)> = config
            .model_spec()
            .param_specs()
            .into_iter()
            .map(|p| (p.name, p.shape))
            .collect();
        let theirs: Vec<(String, Vec<usize>)> = ppdet_json(stem, "params")
            .as_array()
            .unwrap()
            .iter()
            .map(|p| {
                let shape = p["shape"].as_array().unwrap();
                (
                    p["name"].as_str().unwrap().to_string(),
                    shape.iter().map(|d| d.as_u64().unwrap() as usize).collect(),
                )
            })
            .collect();
        assert_eq!(ours, theirs, "{stem}: parameters");

        let mut theirs = ppdet_json(stem, "resolved");
        // PaddleDetection expands a single gamma into one factor per
        // milestone: compare the rates the schedule steps through.
        let schedulers = theirs["LearningRate"]["schedulers"].as_array_mut().unwrap();
        let decay = schedulers[0]["PiecewiseDecay"].as_object_mut().unwrap();
        let gammas = decay.remove("gamma").unwrap();
        decay.remove("values");
        let base_lr = theirs["LearningRate"]["base_lr"].as_f64().unwrap();
        let rates: Vec<f64> = std::iter::once(base_lr)
            .chain(
                gammas
                    .as_array()
                    .unwrap()
                    .iter()
                    .map(|g| base_lr * g.as_f64().unwrap()),
            )
            .collect();
        let schedule = config.schedule();
        assert_eq!(schedule.values.len(), rates.len(), "{stem}");
        for (ours, theirs) in schedule.values.iter().zip(&rates) {
            assert!(
                (f64::from(*ours) - theirs).abs() < 1e-6 * theirs,
                "{stem}: {ours} vs {theirs}"
            );
        }

        let ours = serde_json::to_value(&config).unwrap();
        let (mut failures, mut theirs_only) = (Vec::new(), Vec::new());
        let compared = compare_values(stem, &ours, &theirs, &mut failures, &mut theirs_only);
        assert!(failures.is_empty(), "{}", failures.join("\n"));
        assert!(compared > 150, "{stem}: only {compared} values compared");
        // What PaddleDetection's objects carry that pulsefocus has no key
        // for: bookkeeping, the interpolation list RandomShape derives from
        // random_inter, and options that must stay at the value pulsefocus
        // implements (None: any value).
        let null = serde_json::Value::Null;
        let allowed: &[(&str, Option<serde_json::Value>)] = &[
            ("cname2cid", Some(null.clone())),
            ("roidbs", Some(null.clone())),
            ("sample_num", Some((-1).into())),
            ("interps", None),
            ("image_dir", Some("".into())),
            // COCODataSet: categories come from the file.
            ("use_default_label", Some(false.into())),
            ("load_image_only", Some(false.into())),
            ("load_semantic", Some(false.into())),
            ("with_cutmix", Some(false.into())),
            ("hsv_format", Some(false.into())),
            ("random_channel", Some(false.into())),
            ("is_mask_crop", Some(false.into())),
            ("is_mask_expand", Some(false.into())),
            ("is_mask_flip", Some(false.into())),
            ("max_size", Some(0.into())),
            ("resize_box", Some(false.into())),
            ("use_cv2", Some(true.into())),
        ];
        for (key, value) in theirs_only {
            let Some((_, want)) = allowed.iter().find(|(k, _)| *k == key) else {
                panic!("{stem}: PaddleDetection has {key}: {value}, pulsefocus has no such key")
            };
            if let Some(want) = want {
                assert_eq!(&value, want, "{stem}: {key}");
            }
        }
    }
}

/// The shipped RON configs are PaddleDetection's YAML: the same config but
/// for the keys that have no effect (left out of the RON), the output
/// folder's name, the exclusion preset and the COCO TestReader's category
/// file under dataset/coco (each said in a comment there).
#[test]
fn shipped_ron_configs_mirror_paddledetections_yaml() {
    /// Drops what has no effect here (`Config::warnings` names it).
    fn effective(mut c: Config) -> Config {
        c.use_gpu = None;
        for reader in [
            Some(&mut c.train_reader),
            c.eval_reader.as_mut(),
            c.test_reader.as_mut(),
        ]
        .into_iter()
        .flatten()
        {
            reader.inputs_def.fields.clear();
            reader.inputs_def.image_shape.clear();
            reader.bufsize = None;
            reader.use_process = None;
            reader
                .batch_transforms
                .retain(|t| !matches!(t, Transform::Gt2YoloTarget(_)));
        }
        c
    }
    for (ron, yaml) in [
        ("yolov3_mobilenet_v1_coco.ron", "yolov3_mobilenet_v1.yml"),
        ("yolov3_darknet_coco.ron", "yolov3_darknet.yml"),
        ("yolov3_mobilenet_v1_voc.ron", "yolov3_mobilenet_v1_voc.yml"),
        ("yolov3_darknet_voc.ron", "yolov3_darknet_voc.yml"),
        ("ssd_mobilenet_v1_voc.ron", "ssd_mobilenet_v1_voc.yml"),
    ] {
        let ours = load(&configs_dir().join(ron), &[]).unwrap();
        let mut theirs = effective(load(&ppdet_fixture(yaml), &[]).unwrap());
        theirs.weights = ours.weights.clone();
        theirs.finetune_exclude_pretrained_params = ours.finetune_exclude_pretrained_params.clone();
        if ron.contains("coco") {
            let dataset = ours.test_reader.as_ref().unwrap().dataset.clone();
            theirs.test_reader.as_mut().unwrap().dataset = dataset;
        }
        assert_eq!(ours, theirs, "{ron} vs {yaml}");
    }
}

/// PaddleDetection's SSD YAML and its RON mirror describe the same run:
/// model, priors, output decoder, optimizer and schedule; the model is
/// `SsdSpec::mobilenet_v1(21)` and its parameters are those
/// PaddleDetection's train program creates (`make_fixtures.py`).
#[test]
fn ssd_yaml_and_ron_give_the_same_model_and_training() {
    use crate::models::mobilenet_v1::MobileNetV1Spec;
    use crate::models::ssd::{SsdBackbone, SsdSpec};
    use crate::optim::{Optimizer, Schedule};
    use crate::ssd::ssd_nms;
    let yaml = load(&ppdet_fixture("ssd_mobilenet_v1_voc.yml"), &[]).unwrap();
    let ron = load(&configs_dir().join("ssd_mobilenet_v1_voc.ron"), &[]).unwrap();
    for c in [&yaml, &ron] {
        assert!(c.is_ssd() && c.arch() == Architecture::SSD);
        assert_eq!(c.ssd_spec(), SsdSpec::mobilenet_v1(21));
        assert_eq!(c.ssd_nms_config(), ssd_nms());
        let train = c.train_config();
        assert_eq!(train.optimizer, Optimizer::rmsprop(0.0));
        assert_eq!(train.weight_decay, 5e-5);
        let milestones = [10000, 15000, 20000, 25000];
        let values = vec![1e-3, 5e-4, 2.5e-4, 1e-4, 1e-5];
        assert_eq!(
            train.schedule,
            Schedule::piecewise_values(c.learning_rate.base_lr, &milestones, values, 0, 1.0)
        );
        let exclude = c.exclude_patterns().unwrap();
        assert_eq!(exclude, if c == &ron { vec!["^conv2d_"] } else { vec![] });
    }
    assert_eq!(yaml.ssd_spec(), ron.ssd_spec());
    assert_eq!(yaml.ssd_nms_config(), ron.ssd_nms_config());
    assert_eq!(yaml.train_config(), ron.train_config());
    assert!(
        !load(&configs_dir().join("yolov3_mobilenet_v1_voc.ron"), &[])
            .unwrap()
            .is_ssd()
    );
    // The 20 VOC labels and the background make 21 classes.
    let labels: Vec<String> = (0..20).map(|i| format!("c{i}")).collect();
    let file = Path::new("ssd.yml");
    assert!(yaml.check_num_classes(file, &labels, "labels").is_ok());
    let e = yaml
        .check_num_classes(file, &labels[..19], "labels")
        .unwrap_err();
    assert!(
        e.message
            .contains("21 classes with the background but labels names 19"),
        "{e}"
    );
    assert!(e.message.ends_with("set -o num_classes=20"), "{e}");

    let ours: Vec<(String, Vec<usize>)> = yaml
        .ssd_spec()
        .param_specs()
        .into_iter()
        .map(|p| (p.name, p.shape))
        .collect();
    let theirs: Vec<(String, Vec<usize>)> = ppdet_json("ssd_mobilenet_v1_voc", "params")
        .as_array()
        .unwrap()
        .iter()
        .map(|p| {
            let shape = p["shape"].as_array().unwrap();
            (
                p["name"].as_str().unwrap().to_string(),
                shape.iter().map(|d| d.as_u64().unwrap() as usize).collect(),
            )
        })
        .collect();
    assert_eq!(ours, theirs, "parameters");
    // Other class counts and sizes follow: 81 classes, a half-width model.
    let o = overrides(&["num_classes=81", "MobileNet.conv_group_scale=0.5"]);
    let c = load(&ppdet_fixture("ssd_mobilenet_v1_voc.yml"), &o).unwrap();
    let spec = c.ssd_spec();
    assert_eq!(
        (spec.num_classes, &spec.backbone),
        (
            81,
            &SsdBackbone::MobileNetV1(MobileNetV1Spec { scale: 0.5 })
        )
    );
    assert_eq!(spec.priors, SsdSpec::mobilenet_v1(81).priors);
}

/// Every value `load_config` resolves for the SSD YAML equals ours, but for
/// what has no effect with explicit rates (base_lr, gamma) and keys
/// pulsefocus has no use for at PaddleDetection's values.
#[test]
fn ssd_yaml_fixture_matches_paddledetections_own_code() {
    let config = load(&ppdet_fixture("ssd_mobilenet_v1_voc.yml"), &[]).unwrap();
    let mut theirs = ppdet_json("ssd_mobilenet_v1_voc", "resolved");
    // With values, PiecewiseDecay takes neither base_lr (0.01 there, 0.001
    // here: no warm-up reads it) nor gamma.
    let lr = theirs["LearningRate"].as_object_mut().unwrap();
    lr.remove("base_lr");
    let decay = lr["schedulers"][0]["PiecewiseDecay"]
        .as_object_mut()
        .unwrap();
    decay.remove("gamma");
    let ours = serde_json::to_value(&config).unwrap();
    let (mut failures, mut theirs_only) = (Vec::new(), Vec::new());
    let compared = compare_values("ssd", &ours, &theirs, &mut failures, &mut theirs_only);
    assert!(failures.is_empty(), "{}", failures.join("\n"));
    assert!(compared > 150, "only {compared} values compared");
    let null = serde_json::Value::Null;
    let allowed: &[(&str, serde_json::Value)] = &[
        ("cname2cid", null.clone()),
        ("roidbs", null.clone()),
        ("sample_num", (-1).into()),
        ("image_dir", "".into()),
        ("with_cutmix", false.into()),
        ("is_mask_crop", false.into()),
        ("is_mask_expand", false.into()),
        ("is_mask_flip", false.into()),
        ("resize_box", false.into()),
        ("return_index", false.into()),
        // Not given here: as the picture is, channels-first after Permute.
        ("is_channel_first", true.into()),
        // Left out: no prior steps.
        ("steps", null.clone()),
    ];
    for (key, value) in theirs_only {
        let Some((_, want)) = allowed.iter().find(|(k, _)| *k == key) else {
            panic!("PaddleDetection has {key}: {value}, pulsefocus has no such key")
        };
        assert_eq!(&value, want, "{key}");
    }
    let warnings = config.warnings().join("\n");
    for key in [
        "use_gpu",
        "inputs_def.fields (TrainReader, EvalReader, TestReader)",
        "inputs_def.image_shape (TrainReader, EvalReader, TestReader)",
        "bufsize (TrainReader, EvalReader)",
        "use_process (TrainReader, EvalReader)",
    ] {
        assert!(warnings.contains(key), "{key}: {warnings}");
    }
    assert_eq!(config.warnings().len(), 5, "{warnings}");
    // Sections of the other architecture are named too.
    let o = overrides(&["YOLOv3Head.width=64", "DarkNet.depth=53"]);
    let c = load(&ppdet_fixture("ssd_mobilenet_v1_voc.yml"), &o).unwrap();
    assert!(c
        .warnings()
        .contains(&"YOLOv3Head has no effect: architecture is SSD".to_string()));
    let o = overrides(&["MultiBoxHead.offset=0.5"]);
    let c = load(&configs_dir().join("yolov3_darknet_voc.ron"), &o).unwrap();
    assert!(c
        .warnings()
        .contains(&"MultiBoxHead has no effect: architecture is YOLOv3".to_string()));
}

/// PaddleDetection's VGG16-SSD YAML (ssd_vgg16_300_voc.yml) and its RON
/// mirror are `SsdSpec::vgg16(21)` trained with Momentum; VGG values
/// pulsefocus cannot build are one-line errors naming the file and the key.
#[test]
fn ssd_vgg16_yaml_and_ron_are_vgg16_ssd() {
    use crate::models::ssd::SsdSpec;
    use crate::optim::{Optimizer, Schedule};
    let yaml = load(&ppdet_fixture("ssd_vgg16_300_voc.yml"), &[]).unwrap();
    let path = configs_dir().join("ssd_vgg16_300_voc.ron");
    let ron = load(&path, &[]).unwrap();
    for c in [&yaml, &ron] {
        assert!(c.is_ssd());
        assert_eq!(c.ssd_spec(), SsdSpec::vgg16(21));
        let train = c.train_config();
        assert_eq!(train.optimizer, Optimizer::Momentum { momentum: 0.9 });
        assert_eq!(train.weight_decay, 5e-4);
        assert_eq!(
            train.schedule,
            Schedule::piecewise(1e-3, 0.1, &[80000, 100000], 0, 1.0)
        );
    }
    assert_eq!(yaml.ssd_nms_config(), ron.ssd_nms_config());
    assert_eq!(yaml.train_config(), ron.train_config());
    // VGG19 and a norm on fc7 too: the spec follows the section.
    let o = overrides(&[
        "VGG.depth=19",
        "VGG.normalizations=[20, 10, -1, -1, -1, -1]",
    ]);
    let spec = load(&path, &o).unwrap().ssd_spec();
    let mut want = SsdSpec::vgg16(21);
    if let crate::models::ssd::SsdBackbone::Vgg(vgg) = &mut want.backbone {
        vgg.depth = 19;
        vgg.normalizations[1] = Some(10.0);
    }
    assert_eq!(spec, want);
    let cases: &[(&[&str], &str, &str)] = &[
        (&["VGG.depth=13"], "key VGG.depth", "(supported: 16, 19)"),
        (
            &["VGG.with_extra_blocks=false"],
            "key VGG.with_extra_blocks",
            "must be true",
        ),
        (
            &["VGG.extra_block_filters=[[256, 512, 1, 2, 3], [128, 0, 1, 2, 3], [128, 256, 0, 1, 3], [128, 256, 0, 1, 3]]"],
            "key VGG.extra_block_filters[1]",
            "positive widths",
        ),
        (
            &["VGG.normalizations=[20, -1, -1]"],
            "key VGG.normalizations",
            "has 3 entries: give one per feature level (6",
        ),
        (
            &["VGG.normalizations=[0, -1, -1, -1, -1, -1]"],
            "key VGG.normalizations",
            "0 is not supported",
        ),
        (
            &["MultiBoxHead.steps=[8, 16]"],
            "key MultiBoxHead.steps",
            "one per feature level (6)",
        ),
    ];
    for (o, key, message) in cases {
        let e = load(&path, &overrides(o)).unwrap_err().to_string();
        assert!(e.contains("ssd_vgg16_300_voc.ron"), "{e}");
        assert!(e.contains(key), "{key}: {e}");
        assert!(e.contains(message), "{message}: {e}");
        assert_eq!(e.lines().count(), 1, "{e}");
    }
}

/// SSD keys and values pulsefocus cannot honour are one-line errors naming
/// the file and the key.
#[test]
fn unsupported_ssd_values_are_errors_naming_the_key() {
    let yaml = ppdet_fixture("ssd_mobilenet_v1_voc.yml");
    let cases: &[(&[&str], &str, &str)] = &[
        (
            &["SSD.backbone=ResNet"],
            "key SSD.backbone",
            "'ResNet' is not supported (supported: MobileNet, VGG)",
        ),
        (
            &["SSD.output_decoder.nms_eta=0.5"],
            "key SSD.output_decoder.nms_eta",
            "(supported: 1.0",
        ),
        (
            &["SSD.output_decoder.keep_top_k=0"],
            "key SSD.output_decoder.keep_top_k",
            "-1 for all",
        ),
        (
            &["SSD.output_decoder.background_label=21"],
            "key SSD.output_decoder.background_label",
            "below num_classes",
        ),
        (
            &["MultiBoxHead.kernel_size=3"],
            "key MultiBoxHead.pad",
            "kernel_size / 2",
        ),
        (
            &["MultiBoxHead.max_sizes=~"],
            "key MultiBoxHead.min_sizes",
            "give both",
        ),
        (
            &["MultiBoxHead.steps=[8, 16]"],
            "key MultiBoxHead.steps",
            "one per feature level (6)",
        ),
        (
            &["MultiBoxHead.aspect_ratios=[[2.0]]"],
            "key MultiBoxHead.aspect_ratios",
            "one per feature level",
        ),
        (
            &["MultiBoxHead.max_sizes=[[], 150.0, 195.0, 240.0, 285.0, 200.0]"],
            "key MultiBoxHead.max_sizes[5]",
            "larger than it",
        ),
        (
            &["MobileNet.with_extra_blocks=false"],
            "key MobileNet.with_extra_blocks",
            "must be true",
        ),
        (
            &["MobileNet.extra_block_filters=[[256, 512]]"],
            "key MobileNet.extra_block_filters",
            "four",
        ),
        (
            &["MobileNet.norm_decay=0.0005"],
            "key MobileNet.norm_decay",
            "(supported: 0)",
        ),
        (&["num_classes=1"], "key num_classes", "background"),
        (
            &["TrainReader.dataset.with_background=false"],
            "key TrainReader.dataset.VOCDataSet.with_background",
            "class 0 is the background",
        ),
        (
            &["OptimizerBuilder.optimizer.type=Adam"],
            "key OptimizerBuilder.optimizer.type",
            "(supported: Momentum, RMSPropOptimizer)",
        ),
        (
            &[
                "OptimizerBuilder.optimizer.type=Momentum",
                "OptimizerBuilder.optimizer.rho=0.9",
            ],
            "key OptimizerBuilder.optimizer.rho",
            "RMSPropOptimizer setting",
        ),
        (
            &["OptimizerBuilder.regularizer.type=L1"],
            "key OptimizerBuilder.regularizer.type",
            "(supported: L2)",
        ),
        (
            &["architecture=HybridTaskCascade"],
            "key architecture",
            "(supported: YOLOv3, SSD, FasterRCNN, MaskRCNN, CascadeRCNN, CascadeMaskRCNN, RetinaNet)",
        ),
    ];
    for (o, key, message) in cases {
        let e = load(&yaml, &overrides(o)).unwrap_err().to_string();
        assert!(e.contains("ssd_mobilenet_v1_voc.yml"), "{e}");
        assert!(e.contains(key), "{key}: {e}");
        assert!(e.contains(message), "{message}: {e}");
        assert_eq!(e.lines().count(), 1, "{e}");
    }
    // Reader and schedule values, edited in a copy of the file.
    let text = fs::read_to_string(&yaml).unwrap();
    let edits = [
        ("0.00001]", "0.00001, 0.000001]", "key LearningRate.schedulers[0].PiecewiseDecay.values): 6 rates for 4 milestones"),
        ("    is_order: true", "    is_order: true\n    count: 5", "key TrainReader.sample_transforms[1].RandomDistort.count): must be at most 4"),
        ("brightness_lower: 0.875", "brightness_lower: 1.5", "key TrainReader.sample_transforms[1].RandomDistort.brightness_lower)"),
        ("127.502231]\n  batch_size: 32", "127.502231]\n  - !BboxXYXY2XYWH {}\n  batch_size: 32", "key TrainReader.sample_transforms): needs NormalizeBox and no BboxXYXY2XYWH"),
        ("    interp: 1\n    target_size: 300\n    use_cv2: false\n  - !RandomFlipImage", "    interp: 0\n    target_size: 300\n    use_cv2: false\n  - !RandomFlipImage", "key TrainReader.sample_transforms[5].ResizeImage.interp): with use_cv2: false is a PIL filter"),
        ("    max_size: 0\n", "    max_size: 1000\n", "key TestReader.sample_transforms): has a ResizeImage with max_size, which only FasterRCNN, MaskRCNN, CascadeRCNN, CascadeMaskRCNN and RetinaNet take"),
    ];
    for (from, to, want) in edits {
        assert!(text.contains(from), "{from}");
        let dir = write_configs(&[("ssd.yml", &text.replacen(from, to, 1))]);
        let e = load(&dir.path().join("ssd.yml"), &[])
            .unwrap_err()
            .to_string();
        assert!(e.contains("ssd.yml (") && e.contains(want), "{want}: {e}");
    }
}

/// PaddleDetection's two Faster R-CNN configs (with their `_READER_`
/// files) build the models and operator settings their constructors give.
#[test]
fn faster_rcnn_yaml_gives_the_constructors_model_and_settings() {
    use crate::models::faster_rcnn::FasterRcnnSpec;
    use crate::rcnn::config::{ProposalConfig, RcnnConfig};
    let c4_path = ppdet_fixture("faster_rcnn_r50_1x.yml");
    let c4 = load(&c4_path, &[]).unwrap();
    assert_eq!(c4.arch(), Architecture::FasterRCNN);
    assert_eq!(
        c4.faster_rcnn_spec(&c4_path).unwrap(),
        FasterRcnnSpec::r50_c4(81)
    );
    assert_eq!(
        c4.rcnn_config(&c4_path).unwrap(),
        RcnnConfig::faster_rcnn(81)
    );
    let fpn_path = ppdet_fixture("faster_rcnn_r50_fpn_1x.yml");
    let fpn = load(&fpn_path, &[]).unwrap();
    assert_eq!(
        fpn.faster_rcnn_spec(&fpn_path).unwrap(),
        FasterRcnnSpec::r50_fpn(81)
    );
    // The FPN config differs in the proposals' top-n only (and its
    // rpn_target_assign leaves use_random at its default, true).
    let per_level = |pre, post| ProposalConfig {
        pre_nms_top_n: pre,
        post_nms_top_n: post,
        ..ProposalConfig::train()
    };
    let want = RcnnConfig {
        train_proposal: per_level(2000, 2000),
        test_proposal: per_level(1000, 1000),
        ..RcnnConfig::faster_rcnn(81)
    };
    assert_eq!(fpn.rcnn_config(&fpn_path).unwrap(), want);
    // Momentum with a linear warmup into piecewise decay.
    let train = fpn.train_config();
    assert_eq!(train.weight_decay, 1e-4);
    // freeze_at 2 and freeze_norm, which the trainer applies.
    let backbone = FasterRcnnSpec::r50_fpn(81).backbone;
    assert_eq!(train.frozen_units, backbone.frozen_units());
    assert!(train.freeze_norm);
    assert_eq!(fpn.train_reader.batch_size, 2);
    assert_eq!(
        fpn.exclude_patterns().unwrap(),
        Vec::<String>::new(),
        "no finetune list in the YAML"
    );
}

/// Values the Faster R-CNN sections refuse name their key.
#[test]
fn faster_rcnn_values_that_do_not_build_name_their_key() {
    let c4 = ppdet_fixture("faster_rcnn_r50_1x.yml");
    let fpn = ppdet_fixture("faster_rcnn_r50_fpn_1x.yml");
    let cases: [(&PathBuf, &[&str], &str); 9] = [
        (
            &c4,
            &["TrainReader.dataset.load_crowd=true"],
            "key TrainReader.dataset.load_crowd",
        ),
        (&c4, &["ResNet.depth=42"], "key ResNet.depth"),
        (&c4, &["ResNet.norm_type=gn"], "key ResNet.norm_type"),
        (&c4, &["ResNet.freeze_norm=false"], "key ResNet.freeze_norm"),
        (&c4, &["ResNetC5.depth=101"], "key ResNetC5.depth"),
        (&c4, &["BBoxHead.head=TwoFCHead"], "key BBoxHead.head"),
        (
            &fpn,
            &["FPNRPNHead.num_chan=128"],
            "key FPNRPNHead.num_chan",
        ),
        (
            &fpn,
            &["TrainReader.batch_transforms=[]"],
            "key TrainReader.batch_transforms",
        ),
        (
            &fpn,
            &["EvalReader.batch_transforms=[]"],
            "key EvalReader.batch_transforms",
        ),
    ];
    for (path, o, key) in cases {
        let e = load(path, &overrides(o)).unwrap_err().to_string();
        assert!(e.contains(key), "{o:?}: {e}");
        assert_eq!(e.lines().count(), 1, "{e}");
    }
}

/// The RON mirrors of PaddleDetection's Faster R-CNN, Mask R-CNN, Cascade
/// R-CNN and RetinaNet configs
/// are the same configs: model, operators, optimizer, schedule and readers.
#[test]
fn rcnn_reader_ron_mirrors_equal_the_yaml() {
    for name in [
        "faster_rcnn_r50_1x",
        "faster_rcnn_r50_fpn_1x",
        "mask_rcnn_r50_1x",
        "mask_rcnn_r50_fpn_1x",
        "cascade_rcnn_r50_fpn_1x",
        "cascade_mask_rcnn_r50_fpn_1x",
        "retinanet_r50_fpn_1x",
    ] {
        let ron = load(&configs_dir().join(format!("{name}.ron")), &[]).unwrap();
        let mut yaml = load(&ppdet_fixture(&format!("{name}.yml")), &[]).unwrap();
        // The keys without effect, left out of the mirrors.
        yaml.use_gpu = None;
        for reader in [
            Some(&mut yaml.train_reader),
            yaml.eval_reader.as_mut(),
            yaml.test_reader.as_mut(),
        ]
        .into_iter()
        .flatten()
        {
            reader.inputs_def.fields.clear();
            reader.use_process = None;
        }
        assert_eq!(ron, yaml, "{name}");
    }
}

/// PaddleDetection's RetinaNet config (with its `_READER_`, the FPN R-CNN
/// reader padded to 128) builds the model and operator settings its
/// constructors give, and trains as Faster R-CNN's ResNet does.
#[test]
fn retinanet_yaml_gives_the_constructors_model_and_settings() {
    use crate::models::retinanet::RetinaNetSpec;
    use crate::retinanet::RetinaConfig;
    let path = ppdet_fixture("retinanet_r50_fpn_1x.yml");
    let c = load(&path, &[]).unwrap();
    assert_eq!(c.arch(), Architecture::RetinaNet);
    assert!(c.arch().uses_rcnn_reader());
    let spec = RetinaNetSpec::r50_fpn(81);
    assert_eq!(c.retinanet_spec(&path).unwrap(), spec);
    assert_eq!(c.retina_config(&path).unwrap(), RetinaConfig::default());
    let model = c.model_spec();
    assert_eq!(model.describe(), "RetinaNet with ResNet-FPN backbone");
    assert_eq!(model.foreground_classes(), 80);
    assert_eq!(model.backbone_unit_count(), spec.backbone.units().len());
    // freeze_at 2 and frozen affine channels, which the trainer applies.
    let train = c.train_config();
    assert_eq!(train.frozen_units, spec.backbone.frozen_units());
    assert!(train.freeze_norm);
    assert_eq!(train.weight_decay, 1e-4);
    // The R-CNN reader: short side 800 capped at 1333, padded to 128,
    // every box kept.
    let loader = c
        .train_reader
        .train_loader_config(&path, 0, c.arch())
        .unwrap();
    let resize = loader.short_side.unwrap();
    assert_eq!((resize.target_sizes, resize.max_size), (vec![800], 1333));
    assert_eq!(resize.pad_to_stride, 128);
    assert_eq!(loader.max_boxes, 0);
    let (name, eval) = c.eval_or_test_reader().unwrap();
    let eval = eval.eval_loader_config(&path, name, c.arch()).unwrap();
    assert_eq!(eval.short_side.unwrap().pad_to_stride, 128);
    let preset = load(
        &path,
        &overrides(&["finetune_exclude_pretrained_params=preset"]),
    )
    .unwrap();
    assert_eq!(preset.exclude_patterns().unwrap(), ["retnet_cls_pred_fpn"]);
}

/// Values the RetinaNet sections refuse name their key, in one line; so do
/// extra convs in a Faster R-CNN pyramid.
#[test]
fn retinanet_values_that_do_not_build_name_their_key() {
    let retina = ppdet_fixture("retinanet_r50_fpn_1x.yml");
    let fpn = ppdet_fixture("faster_rcnn_r50_fpn_1x.yml");
    let cases: [(&PathBuf, &[&str], &str); 13] = [
        (&retina, &["RetinaNet.fpn=FPNX"], "key RetinaNet.fpn"),
        (
            &retina,
            &["FPN.has_extra_convs=false"],
            "key FPN.has_extra_convs",
        ),
        (
            &retina,
            &["FPN.spatial_scale=[0.03125,0.0625,0.25]"],
            "key FPN.spatial_scale",
        ),
        (
            &retina,
            &["ResNet.feature_maps=[2,3,4]"],
            "key ResNet.feature_maps",
        ),
        (
            &retina,
            &["RetinaHead.max_level=6"],
            "key RetinaHead.min_level",
        ),
        (
            &retina,
            &["RetinaHead.prior_prob=0"],
            "key RetinaHead.prior_prob",
        ),
        (
            &retina,
            &["RetinaHead.num_scales_per_octave=0"],
            "key RetinaHead.num_scales_per_octave",
        ),
        (
            &retina,
            &["RetinaHead.anchor_generator.variance=[1.0,1.0]"],
            "key RetinaHead.anchor_generator.variance",
        ),
        (
            &retina,
            &["RetinaHead.target_assign.negative_overlap=0.6"],
            "key RetinaHead.target_assign.negative_overlap",
        ),
        (
            &retina,
            &["RetinaHead.output_decoder.nms_eta=0"],
            "key RetinaHead.output_decoder.nms_eta",
        ),
        (
            &retina,
            &["TrainReader.dataset.load_crowd=true"],
            "key TrainReader.dataset.load_crowd",
        ),
        (
            &retina,
            &["EvalReader.batch_transforms=[]"],
            "key EvalReader.batch_transforms",
        ),
        (
            &fpn,
            &["FPN.has_extra_convs=true"],
            "key FPN.has_extra_convs",
        ),
    ];
    for (path, o, key) in cases {
        let e = load(path, &overrides(o)).unwrap_err().to_string();
        assert!(e.contains(key), "{o:?}: {e}");
        assert_eq!(e.lines().count(), 1, "{e}");
    }
    // Padded to 32, as Faster R-CNN's reader: not enough for P7.
    let text = fs::read_to_string(&retina).unwrap();
    let reader = fs::read_to_string(ppdet_fixture("faster_fpn_reader.yml")).unwrap();
    let padded_32 = text.replacen("pad_to_stride: 128", "pad_to_stride: 32", 1);
    let dir = write_configs(&[
        ("retina.yml", &padded_32),
        ("faster_fpn_reader.yml", &reader),
    ]);
    let e = load(&dir.path().join("retina.yml"), &[])
        .unwrap_err()
        .to_string();
    let want = "key TrainReader.batch_transforms): must make pictures whose sides are \
                multiples of 128 for RetinaNet's P7 (PadBatch with pad_to_stride: 128)";
    assert!(e.contains(want), "{e}");
}

/// The demo config is `FasterRcnnSpec::small_c4` at 4 classes with frozen
/// batch norms for its affine channels, with the R-CNN reader: one of three
/// short sides per picture, padded to 32.
#[test]
fn faster_rcnn_demo_is_the_small_c4_model_with_the_rcnn_reader() {
    use crate::data::loader::ShortSideResize;
    use crate::models::faster_rcnn::FasterRcnnSpec;
    use crate::models::resnet::NormType;
    let path = configs_dir().join("faster_rcnn_demo.ron");
    let c = load(&path, &[]).unwrap();
    let mut backbone = FasterRcnnSpec::small_c4(4).backbone;
    backbone.norm_type = NormType::BatchNorm;
    assert!(backbone.freeze_norm);
    assert_eq!(
        c.faster_rcnn_spec(&path).unwrap(),
        FasterRcnnSpec::c4(backbone, 4)
    );
    let train = c
        .train_reader
        .train_loader_config(&path, 0, c.arch())
        .unwrap();
    let want = ShortSideResize {
        target_sizes: vec![128, 144, 160],
        max_size: 256,
        interp: crate::data::Interp::Linear,
        pad_to_stride: 32,
        padded_im_info: false,
    };
    assert_eq!(train.short_side, Some(want));
    // Every box kept: slots for the most an image has.
    assert_eq!(train.max_boxes, 0);
    let (name, eval) = c.eval_or_test_reader().unwrap();
    let eval = eval.eval_loader_config(&path, name, c.arch()).unwrap();
    let resize = eval.short_side.unwrap();
    // No PadBatch: batches of one, nothing to pad.
    assert_eq!((resize.target_sizes, resize.pad_to_stride), (vec![128], 0));
}

/// The FPN demo config is `FasterRcnnSpec::small_fpn` at 4 classes, every
/// reader padding to the pyramid's coarsest stride.
#[test]
fn faster_rcnn_fpn_demo_is_the_small_fpn_model_padded_to_32() {
    use crate::models::faster_rcnn::FasterRcnnSpec;
    let path = configs_dir().join("faster_rcnn_fpn_demo.ron");
    let c = load(&path, &[]).unwrap();
    assert_eq!(
        c.faster_rcnn_spec(&path).unwrap(),
        FasterRcnnSpec::small_fpn(4)
    );
    let train = c
        .train_reader
        .train_loader_config(&path, 0, c.arch())
        .unwrap();
    assert_eq!(train.short_side.unwrap().pad_to_stride, 32);
    let (name, eval) = c.eval_or_test_reader().unwrap();
    let eval = eval.eval_loader_config(&path, name, c.arch()).unwrap();
    assert_eq!(eval.short_side.unwrap().pad_to_stride, 32);
}

/// PaddleDetection's two Mask R-CNN configs (with their `_READER_` files)
/// build the models their constructors give, with Faster R-CNN's operator
/// settings, the R-CNN reader carrying polygons for training, and the
/// preset excluding the three class-dependent predictions.
#[test]
fn mask_rcnn_yaml_gives_the_constructors_model_and_settings() {
    use crate::loading::ExcludePatterns;
    use crate::models::mask_rcnn::MaskRcnnSpec;
    use crate::rcnn::config::RcnnConfig;
    let cases = [
        (
            "mask_rcnn_r50_1x",
            MaskRcnnSpec::r50_c4(81),
            "Mask R-CNN with ResNet backbone",
            "faster_rcnn_r50_1x",
        ),
        (
            "mask_rcnn_r50_fpn_1x",
            MaskRcnnSpec::r50_fpn(81),
            "Mask R-CNN with ResNet-FPN backbone",
            "faster_rcnn_r50_fpn_1x",
        ),
    ];
    for (name, spec, describe, faster) in cases {
        let path = ppdet_fixture(&format!("{name}.yml"));
        let c = load(&path, &[]).unwrap();
        assert_eq!(c.arch(), Architecture::MaskRCNN);
        assert!(c.arch().uses_rcnn_reader() && c.arch().has_masks());
        assert_eq!(c.mask_rcnn_spec(&path).unwrap(), spec, "{name}");
        // The Faster R-CNN part's sections are those of the Faster R-CNN
        // config of the same backbone, and so are the operators' settings.
        let faster_path = ppdet_fixture(&format!("{faster}.yml"));
        let faster = load(&faster_path, &[]).unwrap();
        assert_eq!(c.faster_rcnn_spec(&path).unwrap(), spec.faster_rcnn);
        let rcnn = c.rcnn_config(&path).unwrap();
        assert_eq!(rcnn, faster.rcnn_config(&faster_path).unwrap(), "{name}");
        if name == "mask_rcnn_r50_1x" {
            assert_eq!(rcnn, RcnnConfig::faster_rcnn(81));
        }
        let model = c.model_spec();
        assert_eq!(model, ModelSpec::MaskRcnn(Box::new(spec.clone())));
        assert_eq!(model.describe(), describe);
        assert_eq!(model.foreground_classes(), 80);
        assert_eq!(
            model.backbone_unit_count(),
            spec.faster_rcnn.backbone.units().len()
        );
        assert_eq!(model.param_specs(), spec.param_specs());
        // freeze_at 2 and frozen norms, as Faster R-CNN's backbone.
        let train = c.train_config();
        assert_eq!(train.frozen_units, spec.faster_rcnn.backbone.frozen_units());
        assert!(train.freeze_norm);
        assert_eq!(train.weight_decay, 1e-4);
        // Polygons for training only: evaluation scores against the file.
        let loader = c
            .train_reader
            .train_loader_config(&path, 0, c.arch())
            .unwrap();
        assert!(loader.with_polygons);
        assert_eq!(loader.short_side.unwrap().max_size, 1333);
        let (reader, eval) = c.eval_or_test_reader().unwrap();
        let eval = eval.eval_loader_config(&path, reader, c.arch()).unwrap();
        assert!(!eval.with_polygons);

        let preset = load(
            &path,
            &overrides(&["finetune_exclude_pretrained_params=preset"]),
        )
        .unwrap();
        let patterns = preset.exclude_patterns().unwrap();
        assert_eq!(patterns, ["cls_score", "bbox_pred", "mask_fcn_logits"]);
        let patterns = ExcludePatterns::new(&patterns).unwrap();
        let excluded: Vec<String> = spec
            .param_specs()
            .into_iter()
            .filter(|p| patterns.first_match(&p.name).is_some())
            .map(|p| p.name)
            .collect();
        let want = [
            "cls_score_w",
            "cls_score_b",
            "bbox_pred_w",
            "bbox_pred_b",
            "mask_fcn_logits_w",
            "mask_fcn_logits_b",
        ];
        assert_eq!(excluded, want, "{name}");
    }
}

/// Values the Mask R-CNN sections refuse name their key, in one line.
#[test]
fn mask_rcnn_values_that_do_not_build_name_their_key() {
    let c4 = ppdet_fixture("mask_rcnn_r50_1x.yml");
    let fpn = ppdet_fixture("mask_rcnn_r50_fpn_1x.yml");
    let faster = ppdet_fixture("faster_rcnn_r50_1x.yml");
    let cases: [(&PathBuf, &[&str], &str); 12] = [
        (
            &c4,
            &["MaskAssigner.resolution=28"],
            "key MaskAssigner.resolution",
        ),
        (&c4, &["MaskHead.resolution=28"], "key MaskHead.resolution"),
        (&c4, &["RoIAlign.resolution=7"], "key MaskHead.resolution"),
        (
            &fpn,
            &["FPNRoIAlign.mask_resolution=7"],
            "key MaskHead.resolution",
        ),
        (
            &fpn,
            &["FPNRoIAlign.mask_resolution=0"],
            "key FPNRoIAlign.mask_resolution",
        ),
        (&fpn, &["MaskHead.conv_dim=0"], "key MaskHead.conv_dim"),
        (
            &c4,
            &["MaskRCNN.mask_head=MaskHeadX"],
            "key MaskRCNN.mask_head",
        ),
        (
            &c4,
            &["MaskRCNN.mask_assigner=Assigner"],
            "key MaskRCNN.mask_assigner",
        ),
        (
            &c4,
            &["MaskRCNN.rpn_head=FPNRPNHead"],
            "key MaskRCNN.rpn_head",
        ),
        (&fpn, &["MaskRCNN.fpn=FPNX"], "key MaskRCNN.fpn"),
        (
            &fpn,
            &["TrainReader.dataset.load_crowd=true"],
            "key TrainReader.dataset.load_crowd",
        ),
        (&faster, &["architecture=MaskRCNN"], "key MaskRCNN"),
    ];
    for (path, o, key) in cases {
        let e = load(path, &overrides(o)).unwrap_err().to_string();
        assert!(e.contains(key), "{o:?}: {e}");
        assert_eq!(e.lines().count(), 1, "{e}");
    }
    // The reader must flip the polygons with the boxes.
    let text = fs::read_to_string(&c4).unwrap();
    let reader = fs::read_to_string(ppdet_fixture("mask_reader.yml")).unwrap();
    let unflipped = reader.replacen("is_mask_flip: true", "is_mask_flip: false", 1);
    let dir = write_configs(&[("mask.yml", &text), ("mask_reader.yml", &unflipped)]);
    let e = load(&dir.path().join("mask.yml"), &[])
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("key TrainReader.sample_transforms[1].RandomFlipImage.is_mask_flip)"),
        "{e}"
    );
    // VOC has no polygons.
    let base = configs_dir().join("mask_rcnn_r50_fpn_1x.ron");
    let voc = format!(
        r#"(_BASE_: ["{}"], TrainReader: (dataset: VOCDataSet(dataset_dir: "d")))"#,
        base.display()
    );
    let dir = write_configs(&[("voc.ron", &voc)]);
    let e = load(&dir.path().join("voc.ron"), &[])
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("key TrainReader.dataset)")
            && e.contains("VOCDataSet is not supported for MaskRCNN"),
        "{e}"
    );
    assert_eq!(e.lines().count(), 1, "{e}");
}

/// A Faster R-CNN config may carry the mask sections: they change
/// nothing, and `warnings` says so; Mask R-CNN's own sections are not
/// named for a Mask R-CNN config.
#[test]
fn mask_sections_in_a_faster_rcnn_config_are_named_without_effect() {
    let faster = ppdet_fixture("faster_rcnn_r50_1x.yml");
    let c = load(&faster, &overrides(&["MaskHead.conv_dim=128"])).unwrap();
    let warnings = c.warnings();
    assert!(
        warnings
            .iter()
            .any(|w| w == "MaskHead has no effect: architecture is FasterRCNN"),
        "{warnings:?}"
    );
    let mask = load(&ppdet_fixture("mask_rcnn_r50_1x.yml"), &[]).unwrap();
    assert!(
        !mask.warnings().iter().any(|w| w.contains("Mask")),
        "{:?}",
        mask.warnings()
    );
}

/// PaddleDetection's two cascade configs (with their `_READER_` files)
/// build the models the constructors give, each stage's assigner as the
/// YAML lists it, with Faster R-CNN FPN's operator settings (stage 1's
/// thresholds and weights are the Faster R-CNN assigner's), the R-CNN
/// reader (with polygons for Cascade Mask R-CNN's training), and the
/// preset excluding every stage's class-dependent outputs.
#[test]
fn cascade_rcnn_yaml_gives_the_constructors_model_and_settings() {
    use crate::loading::ExcludePatterns;
    use crate::models::cascade_rcnn::CascadeRcnnSpec;
    let faster_path = ppdet_fixture("faster_rcnn_r50_fpn_1x.yml");
    let faster = load(&faster_path, &[]).unwrap();
    let cases = [
        (
            "cascade_rcnn_r50_fpn_1x",
            Architecture::CascadeRCNN,
            CascadeRcnnSpec::r50_fpn(81),
            "Cascade R-CNN with ResNet-FPN backbone",
        ),
        (
            "cascade_mask_rcnn_r50_fpn_1x",
            Architecture::CascadeMaskRCNN,
            CascadeRcnnSpec::r50_fpn_mask(81),
            "Cascade Mask R-CNN with ResNet-FPN backbone",
        ),
    ];
    for (name, arch, spec, describe) in cases {
        let path = ppdet_fixture(&format!("{name}.yml"));
        let c = load(&path, &[]).unwrap();
        assert_eq!(c.arch(), arch);
        assert!(c.arch().uses_rcnn_reader() && c.arch().is_cascade());
        assert_eq!(c.arch().has_masks(), spec.mask.is_some());
        assert_eq!(c.cascade_rcnn_spec(&path).unwrap(), spec, "{name}");
        assert_eq!(c.faster_rcnn_spec(&path).unwrap(), spec.faster_rcnn);
        let rcnn = c.rcnn_config(&path).unwrap();
        assert_eq!(rcnn, faster.rcnn_config(&faster_path).unwrap(), "{name}");
        let model = c.model_spec();
        assert_eq!(model, ModelSpec::CascadeRcnn(Box::new(spec.clone())));
        assert_eq!(model.describe(), describe);
        assert_eq!(model.foreground_classes(), 80);
        assert_eq!(model.param_specs(), spec.param_specs());
        // Paddle's parameter list (core/tests/fixtures/cascade_rcnn),
        // names, shapes and order.
        let paddle = crate::fixtures::param_specs(&format!("cascade_rcnn/{name}.81.params.json"));
        assert_eq!(model.param_specs(), paddle, "{name}");
        let train = c.train_config();
        assert_eq!(train.frozen_units, spec.faster_rcnn.backbone.frozen_units());
        assert!(train.freeze_norm);
        let loader = c
            .train_reader
            .train_loader_config(&path, 0, c.arch())
            .unwrap();
        assert_eq!(loader.with_polygons, arch.has_masks());
        assert_eq!(loader.short_side.unwrap().pad_to_stride, 32);
        // Only the cascade's own sections: none named without effect.
        let warnings = c.warnings();
        assert!(
            !warnings.iter().any(|w| w.contains("architecture is")),
            "{warnings:?}"
        );

        let preset = load(
            &path,
            &overrides(&["finetune_exclude_pretrained_params=preset"]),
        )
        .unwrap();
        let patterns = ExcludePatterns::new(&preset.exclude_patterns().unwrap()).unwrap();
        let excluded: Vec<String> = spec
            .param_specs()
            .into_iter()
            .filter(|p| patterns.first_match(&p.name).is_some())
            .map(|p| p.name)
            .collect();
        let mut want: Vec<String> = ["", "_2", "_3"]
            .iter()
            .flat_map(|s| {
                ["cls_score", "bbox_pred"]
                    .map(|o| [format!("{o}{s}_w"), format!("{o}{s}_b")])
                    .concat()
            })
            .collect();
        if arch.has_masks() {
            want.extend(["mask_fcn_logits_w".into(), "mask_fcn_logits_b".into()]);
        }
        assert_eq!(excluded, want, "{name}");
    }
}

/// `CascadeBBoxAssigner`'s lists feed the stages: each stage's thresholds
/// and variances, the shared sampling and stage 1's in `rcnn_config`.
#[test]
fn cascade_assigner_values_feed_the_stages() {
    use crate::models::cascade_rcnn::stage_variances;
    let path = ppdet_fixture("cascade_rcnn_r50_fpn_1x.yml");
    let o = overrides(&[
        "CascadeBBoxAssigner.fg_thresh=[0.4,0.55,0.65]",
        "CascadeBBoxAssigner.bg_thresh_hi=[0.3,0.5,0.6]",
        "CascadeBBoxAssigner.bg_thresh_lo=[0.1,0.0,0.0]",
        "CascadeBBoxAssigner.bbox_reg_weights=[5,10,40]",
        "CascadeBBoxAssigner.batch_size_per_im=256",
        "CascadeBBoxAssigner.shuffle_before_sample=false",
        "CascadeTwoFCHead.mlp_dim=512",
        "CascadeBBoxHead.nms.keep_top_k=50",
    ]);
    let c = load(&path, &o).unwrap();
    let spec = c.cascade_rcnn_spec(&path).unwrap();
    let stages: Vec<(f32, f32, f32, [f32; 4])> = spec
        .stages
        .iter()
        .map(|s| {
            (
                s.fg_thresh,
                s.bg_thresh_hi,
                s.bg_thresh_lo,
                s.bbox_reg_weights,
            )
        })
        .collect();
    assert_eq!(
        stages,
        [
            (0.4, 0.3, 0.1, stage_variances(5.0)),
            (0.55, 0.5, 0.0, stage_variances(10.0)),
            (0.65, 0.6, 0.0, stage_variances(40.0)),
        ]
    );
    assert_eq!(spec.stages[2].layers()[1].outputs, 512);
    let rcnn = c.rcnn_config(&path).unwrap();
    let a = &rcnn.bbox_assigner;
    assert_eq!(
        (
            a.batch_size_per_im,
            a.use_random,
            a.fg_thresh,
            a.bg_thresh_lo
        ),
        (256, false, 0.4, 0.1)
    );
    assert_eq!(a.bbox_reg_weights, [0.2, 0.2, 0.4, 0.4]);
    assert_eq!(rcnn.nms.keep_top_k, Some(50));
}

/// Values the cascade sections refuse name their key, in one line.
#[test]
fn cascade_rcnn_values_that_do_not_build_name_their_key() {
    let cascade = ppdet_fixture("cascade_rcnn_r50_fpn_1x.yml");
    let mask = ppdet_fixture("cascade_mask_rcnn_r50_fpn_1x.yml");
    let faster = ppdet_fixture("faster_rcnn_r50_fpn_1x.yml");
    let a = "CascadeBBoxAssigner";
    let cases: Vec<(&PathBuf, String, String)> = [
        (
            &cascade,
            "CascadeBBoxAssigner.class_aware=true",
            "class_aware",
        ),
        (
            &cascade,
            "CascadeBBoxAssigner.fg_thresh=[0.5,0.6]",
            "fg_thresh",
        ),
        (
            &cascade,
            "CascadeBBoxAssigner.bg_thresh_hi=[0.5,0.6,0.7,0.8]",
            "bg_thresh_hi",
        ),
        (
            &cascade,
            "CascadeBBoxAssigner.bg_thresh_lo=[0.0]",
            "bg_thresh_lo",
        ),
        (
            &cascade,
            "CascadeBBoxAssigner.bbox_reg_weights=[10,20,30,40]",
            "bbox_reg_weights",
        ),
        (
            &mask,
            "CascadeBBoxAssigner.bbox_reg_weights=[10,0,30]",
            "bbox_reg_weights",
        ),
        (&cascade, "CascadeBBoxAssigner.fg_fraction=2", "fg_fraction"),
    ]
    .into_iter()
    .map(|(p, o, k)| (p, o.to_string(), format!("key {a}.{k}")))
    .chain(
        [
            (
                &cascade,
                "CascadeBBoxHead.head=CascadeXConvNormHead",
                "CascadeBBoxHead.head",
            ),
            (
                &cascade,
                "CascadeRCNN.bbox_head=BBoxHead",
                "CascadeRCNN.bbox_head",
            ),
            (
                &cascade,
                "CascadeRCNN.bbox_assigner=BBoxAssigner",
                "CascadeRCNN.bbox_assigner",
            ),
            (&cascade, "CascadeRCNN.fpn=BiFPN", "CascadeRCNN.fpn"),
            (
                &cascade,
                "CascadeRCNN.backbone=ResNeXt",
                "CascadeRCNN.backbone",
            ),
            (
                &cascade,
                "CascadeRCNN.rpn_head=RPNHead",
                "CascadeRCNN.rpn_head",
            ),
            (
                &cascade,
                "CascadeRCNN.roi_extractor=RoIAlign",
                "CascadeRCNN.roi_extractor",
            ),
            (&cascade, "ResNet.variant=d", "ResNet.variant"),
            (&cascade, "ResNet.depth=42", "ResNet.depth"),
            (
                &cascade,
                "CascadeTwoFCHead.mlp_dim=0",
                "CascadeTwoFCHead.mlp_dim",
            ),
            (
                &mask,
                "CascadeMaskRCNN.mask_head=MaskHeadX",
                "CascadeMaskRCNN.mask_head",
            ),
            (
                &mask,
                "CascadeMaskRCNN.mask_assigner=X",
                "CascadeMaskRCNN.mask_assigner",
            ),
            (
                &mask,
                "MaskAssigner.resolution=14",
                "MaskAssigner.resolution",
            ),
            (
                &mask,
                "FPNRoIAlign.mask_resolution=7",
                "MaskHead.resolution",
            ),
            (&faster, "architecture=CascadeRCNN", "CascadeRCNN"),
            (&faster, "architecture=CascadeMaskRCNN", "CascadeMaskRCNN"),
        ]
        .map(|(p, o, k)| (p, o.to_string(), format!("key {k}"))),
    )
    .collect();
    for (path, o, key) in cases {
        let e = load(path, &overrides(&[&o])).unwrap_err().to_string();
        assert!(e.contains(&format!("{key})")), "{o}: {e}");
        assert_eq!(e.lines().count(), 1, "{e}");
    }
    // CascadeTwoFCHead has no default width.
    let text = fs::read_to_string(&cascade).unwrap();
    let reader = fs::read_to_string(ppdet_fixture("faster_fpn_reader.yml")).unwrap();
    let without = text.replace("CascadeTwoFCHead:\n  mlp_dim: 1024\n", "");
    assert_ne!(without, text);
    let dir = write_configs(&[
        ("cascade.yml", &without),
        ("faster_fpn_reader.yml", &reader),
    ]);
    let e = load(&dir.path().join("cascade.yml"), &[])
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("key CascadeTwoFCHead)") && e.contains("mlp_dim"),
        "{e}"
    );
    // Cascade Mask R-CNN's reader must flip the polygons with the boxes.
    let text = fs::read_to_string(&mask).unwrap();
    let reader = fs::read_to_string(ppdet_fixture("mask_fpn_reader.yml")).unwrap();
    let unflipped = reader.replacen("is_mask_flip: true", "is_mask_flip: false", 1);
    let dir = write_configs(&[("mask.yml", &text), ("mask_fpn_reader.yml", &unflipped)]);
    let e = load(&dir.path().join("mask.yml"), &[])
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("RandomFlipImage.is_mask_flip)") && e.contains("CascadeMaskRCNN"),
        "{e}"
    );
}

/// The sections only the other R-CNNs read are named without effect in a
/// cascade config, and the cascade's in a Faster R-CNN one.
#[test]
fn box_head_sections_of_the_other_rcnn_are_named_without_effect() {
    let cascade = ppdet_fixture("cascade_rcnn_r50_fpn_1x.yml");
    let o = overrides(&["TwoFCHead.mlp_dim=64", "MaskHead.conv_dim=128"]);
    let c = load(&cascade, &o).unwrap();
    assert!(
        c.warnings()
            .iter()
            .any(|w| w == "TwoFCHead, MaskHead has no effect: architecture is CascadeRCNN"),
        "{:?}",
        c.warnings()
    );
    let faster = ppdet_fixture("faster_rcnn_r50_fpn_1x.yml");
    let c = load(&faster, &overrides(&["CascadeTwoFCHead.mlp_dim=64"])).unwrap();
    assert!(
        c.warnings()
            .iter()
            .any(|w| w == "CascadeTwoFCHead has no effect: architecture is FasterRCNN"),
        "{:?}",
        c.warnings()
    );
}

/// The cascade demo configs are `CascadeRcnnSpec::small` and `small_mask`
/// at 4 classes, every reader padding to the pyramid's coarsest stride, the
/// mask one training on polygons.
#[test]
fn cascade_demos_are_the_small_cascades_padded_to_32() {
    use crate::models::cascade_rcnn::CascadeRcnnSpec;
    use crate::models::resnet::NormType;
    for (name, mut spec) in [
        ("cascade_rcnn_fpn_demo.ron", CascadeRcnnSpec::small(4)),
        (
            "cascade_mask_rcnn_fpn_demo.ron",
            CascadeRcnnSpec::small_mask(4),
        ),
    ] {
        // The demos' frozen batch norms, which a checkpoint trained from
        // scratch provides.
        spec.faster_rcnn.backbone.norm_type = NormType::BatchNorm;
        let path = configs_dir().join(name);
        let c = load(&path, &[]).unwrap();
        assert_eq!(c.cascade_rcnn_spec(&path).unwrap(), spec, "{name}");
        let train = c
            .train_reader
            .train_loader_config(&path, 0, c.arch())
            .unwrap();
        assert_eq!(train.short_side.unwrap().pad_to_stride, 32);
        assert_eq!(train.with_polygons, spec.mask.is_some());
        let (reader, eval) = c.eval_or_test_reader().unwrap();
        let eval = eval.eval_loader_config(&path, reader, c.arch()).unwrap();
        assert_eq!(eval.short_side.unwrap().pad_to_stride, 32);
        assert!(c.warnings().is_empty(), "{name}: {:?}", c.warnings());
    }
}
