# Sourced by the fine-tune demos: a shipped config run on `pulsefocus synth`
# COCO data. `synth_config BASE NAME CLASSES ITERS BASE_LR` writes
# configs/NAME.ron: configs/BASE.ron's model, frozen stages and norms as they
# are, with its data (dataset/synth, pictures at their own 256 pixels, batch
# 2), the class count (background included) and a learning rate for a run of
# ITERS steps: a warm-up of 100, then a tenth at 3/4 and at 9/10.

schedule() {
    echo "LearningRate: (
        base_lr: $2,
        schedulers: [
            PiecewiseDecay(gamma: 0.1, milestones: [$(($1 * 3 / 4)), $(($1 * 9 / 10))]),
            LinearWarmup(start_factor: 0.33333334, steps: 100),
        ],
    ),"
}

synth_config() {
    local base=$1 name=$2 classes=$3 iters=$4 base_lr=$5 extra=${6:-}
    local transforms='NormalizeImage(is_channel_first: false, is_scale: true, mean: [0.485, 0.456, 0.406], std: [0.229, 0.224, 0.225]),
            ResizeImage(target_size: 256, max_size: 256, interp: 1, use_cv2: true),
            Permute(to_bgr: false, channel_first: true),'
    cat > "configs/$name.ron" <<RON
(
    _BASE_: ["$base.ron"],
    pretrain_weights: "",
    weights: "output/$name/model_final",
    num_classes: $classes,
    max_iters: $iters,
    snapshot_iter: $(((iters + 1) / 2)),
    $(schedule "$iters" "$base_lr")
    TrainReader: (
        dataset: COCODataSet(dataset_dir: "dataset/synth", image_dir: "JPEGImages", anno_path: "annotations/instances_train.json"),
        sample_transforms: [
            DecodeImage(to_rgb: true),
            RandomFlipImage(prob: 0.5),
            $transforms
        ],
        batch_size: 2,
    ),
    EvalReader: (
        dataset: COCODataSet(dataset_dir: "dataset/synth", image_dir: "JPEGImages", anno_path: "annotations/instances_val.json"),
        sample_transforms: [DecodeImage(to_rgb: true), $transforms],
    ),
    TestReader: (
        dataset: ImageFolder(anno_path: "dataset/synth/annotations/instances_val.json"),
        sample_transforms: [DecodeImage(to_rgb: true), $transforms],
    ),
    $extra
)
RON
}
