//! Parity on a real GPU: each kernel's PTX, launched through the host crate,
//! against the same kernel body run by the CPU grid emulator (which the
//! device crate's own tests check against plain references). Without a GPU
//! these tests print why and pass, unless PULSEFOCUS_REQUIRE_GPU=1 (set by
//! scripts/gpu-check.sh), where a missing GPU fails them.
use pulsefocus_core::backend::{Activation, BatchNormGeom, Conv2dGeom, SgdStep};
use pulsefocus_gpu::ops::conv::{self as conv_ops, ConvKind};
use pulsefocus_gpu::ops::LaunchShape;
use pulsefocus_gpu::{DeviceBuffer, Gpu, NmsOptions, Strides, YoloLevel};
use pulsefocus_gpu_device as dev;
use pulsefocus_gpu_device::emu::{launch, launch_independent, DeviceBuf, Dim3};

fn gpu() -> Option<Gpu> {
    match Gpu::open() {
        Ok(gpu) => Some(gpu),
        Err(err) if std::env::var("PULSEFOCUS_REQUIRE_GPU").as_deref() == Ok("1") => {
            panic!("PULSEFOCUS_REQUIRE_GPU=1 but {err}")
        }
        Err(err) => {
            println!("skipped: {err}");
            None
        }
    }
}

fn values(len: usize, salt: u32) -> Vec<f32> {
    (0..len)
        .map(|i| {
            ((i as u32)
                .wrapping_mul(2654435761)
                .wrapping_add(salt.wrapping_mul(40503))
                % 2001) as f32
                / 1000.0
                - 1.0
        })
        .collect()
}

fn up(gpu: &Gpu, host: &[f32]) -> DeviceBuffer {
    gpu.upload(host).unwrap()
}

fn down(gpu: &Gpu, buffer: &DeviceBuffer) -> Vec<f32> {
    gpu.download(buffer).unwrap()
}

/// GPU math uses fast exp/log and fused multiply-adds: close, not equal.
fn assert_close(what: &str, gpu: &[f32], cpu: &[f32], tolerance: f32) {
    assert_eq!(gpu.len(), cpu.len(), "{what}: lengths");
    for (i, (g, c)) in gpu.iter().zip(cpu).enumerate() {
        assert!(
            (g - c).abs() <= tolerance * (1.0 + c.abs()),
            "{what}[{i}]: gpu {g} vs cpu {c}"
        );
    }
}

const GRID: (Dim3, Dim3) = (Dim3::x(3), Dim3::x(64));

#[test]
fn elementwise_sgd_and_loss_kernels() {
    let Some(gpu) = gpu() else { return };
    let n = 10_007;
    let (x, t) = (
        values(n, 1),
        values(n, 2).iter().map(|v| v.abs()).collect::<Vec<_>>(),
    );
    let (xg, tg) = (up(&gpu, &x), up(&gpu, &t));
    let (xc, tc) = (DeviceBuf::new(&x), DeviceBuf::new(&t));
    let mut yg = gpu.alloc(n).unwrap();
    let yc = DeviceBuf::filled(n, 0.0);
    gpu.activation_forward(Activation::LEAKY_0_1, n, &xg, &mut yg)
        .unwrap();
    launch_independent(GRID.0, GRID.1, |c| unsafe {
        dev::elementwise::activation_forward(
            c,
            xc.ptr(),
            yc.ptr(),
            n as u32,
            dev::elementwise::ACT_LEAKY_RELU,
            0.1,
        )
    });
    assert_close("leaky_relu", &down(&gpu, &yg), &yc.to_vec(), 0.0);

    gpu.sigmoid_forward(n, &xg, &mut yg).unwrap();
    launch_independent(GRID.0, GRID.1, |c| unsafe {
        dev::elementwise::sigmoid_forward(c, xc.ptr(), yc.ptr(), n as u32)
    });
    assert_close("sigmoid", &down(&gpu, &yg), &yc.to_vec(), 1e-5);

    let (mut pg, mut vg) = (up(&gpu, &x), up(&gpu, &t));
    let (pc, vc) = (DeviceBuf::new(&x), DeviceBuf::new(&t));
    let step = SgdStep {
        lr: 1e-3,
        momentum: 0.9,
        weight_decay: 5e-4,
    };
    gpu.momentum_sgd(&step, n, &mut pg, &tg, &mut vg).unwrap();
    launch_independent(GRID.0, GRID.1, |c| unsafe {
        dev::sgd::momentum_sgd(c, pc.ptr(), tc.ptr(), vc.ptr(), n as u32, 1e-3, 0.9, 5e-4)
    });
    assert_close("sgd param", &down(&gpu, &pg), &pc.to_vec(), 1e-6);
    assert_close("sgd velocity", &down(&gpu, &vg), &vc.to_vec(), 1e-6);

    let ones = vec![1.0f32; n];
    let wg = up(&gpu, &ones);
    let (mut lg, mut gg) = (gpu.alloc(n).unwrap(), gpu.alloc(n).unwrap());
    gpu.sigmoid_cross_entropy(&xg, &tg, &wg, &mut lg, &mut gg)
        .unwrap();
    let (wc, lc, gc) = (
        DeviceBuf::new(&ones),
        DeviceBuf::filled(n, 0.0),
        DeviceBuf::filled(n, 0.0),
    );
    launch_independent(GRID.0, GRID.1, |c| unsafe {
        dev::loss::sigmoid_cross_entropy(
            c,
            xc.ptr(),
            tc.ptr(),
            wc.ptr(),
            lc.ptr(),
            gc.ptr(),
            n as u32,
        )
    });
    assert_close("bce loss", &down(&gpu, &lg), &lc.to_vec(), 1e-5);
    assert_close("bce grad", &down(&gpu, &gg), &gc.to_vec(), 1e-5);
    let want: f64 = lc.to_vec().iter().map(|&v| v as f64).sum();
    let got = gpu.sum(n, &lg, false).unwrap();
    assert!(
        (got - want).abs() < 1e-3 * want.abs(),
        "sum {got} vs {want}"
    );
}

#[test]
fn gemm_on_ragged_shapes() {
    let Some(gpu) = gpu() else { return };
    for &(m, n, k) in &[(1, 1, 1), (65, 130, 17), (256, 300, 129)] {
        let (a, b) = (values(m * k, 3), values(k * n, 4));
        let mut cg = gpu.zeros(m * n).unwrap();
        let (mu, nu, ku) = (m as u32, n as u32, k as u32);
        gpu.gemm(
            1,
            (mu, nu, ku),
            1.0,
            &up(&gpu, &a),
            Strides::row_major(ku, 0),
            &up(&gpu, &b),
            Strides::row_major(nu, 0),
            0.0,
            &mut cg,
            nu,
            0,
        )
        .unwrap();
        let (ac, bc, cc) = (
            DeviceBuf::new(&a),
            DeviceBuf::new(&b),
            DeviceBuf::filled(m * n, 0.0),
        );
        let (gx, gy) = dev::tile::grid_for(mu, nu);
        launch(Dim3::xy(gx, gy), Dim3::x(dev::tile::THREADS), |c| unsafe {
            dev::gemm::gemm(
                c,
                mu,
                nu,
                ku,
                1.0,
                ac.ptr(),
                ku,
                1,
                0,
                bc.ptr(),
                nu,
                1,
                0,
                0.0,
                cc.ptr(),
                nu,
                0,
            )
        });
        assert_close(
            &format!("gemm {m}x{n}x{k}"),
            &down(&gpu, &cg),
            &cc.to_vec(),
            1e-4,
        );
    }
}

/// Emulated reference of the three passes with the host crate's own plan.
fn conv_cpu(geo: &Conv2dGeom, x: &[f32], w: &[f32], dy: &[f32]) -> (Vec<f32>, Vec<f32>, Vec<f32>) {
    let p = conv_ops::plan("conv", geo).unwrap();
    let (kind, g) = (p.kind, p.geo);
    let (xc, wc, dyc) = (DeviceBuf::new(x), DeviceBuf::new(w), DeviceBuf::new(dy));
    let (yc, dxc, dwc) = (
        DeviceBuf::filled(p.y_len, 0.0),
        DeviceBuf::filled(p.x_len, 0.0),
        DeviceBuf::filled(p.weight_len, 0.0),
    );
    let dims = |s: LaunchShape| (Dim3::xyz(s.grid.0, s.grid.1, s.grid.2), Dim3::x(s.block.0));
    let (f, d, wshape) = (
        dims(conv_ops::forward_shape(kind, &g)),
        dims(conv_ops::backward_data_shape(kind, &g)),
        dims(conv_ops::backward_filter_shape(kind, &g)),
    );
    match kind {
        // The implicit kernels are the reference for pointwise too (the GPU runs GEMM).
        ConvKind::Tiled | ConvKind::Pointwise => {
            let (f, d) = (
                dims(conv_ops::forward_shape(ConvKind::Tiled, &g)),
                dims(conv_ops::backward_data_shape(ConvKind::Tiled, &g)),
            );
            launch(f.0, f.1, |c| unsafe {
                dev::conv::conv2d_forward(
                    c,
                    xc.ptr(),
                    wc.ptr(),
                    std::ptr::null(),
                    yc.ptr(),
                    g.batch,
                    g.c_in,
                    g.h,
                    g.w,
                    g.c_out,
                    g.k_h,
                    g.k_w,
                    g.stride_h,
                    g.stride_w,
                    g.pad_h,
                    g.pad_w,
                    g.dilation_h,
                    g.dilation_w,
                    g.groups,
                )
            });
            launch(d.0, d.1, |c| unsafe {
                dev::conv::conv2d_backward_data(
                    c,
                    dyc.ptr(),
                    wc.ptr(),
                    dxc.ptr(),
                    g.batch,
                    g.c_in,
                    g.h,
                    g.w,
                    g.c_out,
                    g.k_h,
                    g.k_w,
                    g.stride_h,
                    g.stride_w,
                    g.pad_h,
                    g.pad_w,
                    g.dilation_h,
                    g.dilation_w,
                    g.groups,
                )
            });
            launch(wshape.0, wshape.1, |c| unsafe {
                dev::conv::conv2d_backward_filter(
                    c,
                    xc.ptr(),
                    dyc.ptr(),
                    dwc.ptr(),
                    g.batch,
                    g.c_in,
                    g.h,
                    g.w,
                    g.c_out,
                    g.k_h,
                    g.k_w,
                    g.stride_h,
                    g.stride_w,
                    g.pad_h,
                    g.pad_w,
                    g.dilation_h,
                    g.dilation_w,
                    g.groups,
                )
            });
        }
        ConvKind::Depthwise => {
            launch(f.0, f.1, |c| unsafe {
                dev::conv::depthwise_conv2d_forward(
                    c,
                    xc.ptr(),
                    wc.ptr(),
                    std::ptr::null(),
                    yc.ptr(),
                    g.batch,
                    g.c_in,
                    g.h,
                    g.w,
                    g.k_h,
                    g.k_w,
                    g.stride_h,
                    g.stride_w,
                    g.pad_h,
                    g.pad_w,
                    g.dilation_h,
                    g.dilation_w,
                )
            });
            launch(d.0, d.1, |c| unsafe {
                dev::conv::depthwise_conv2d_backward_data(
                    c,
                    dyc.ptr(),
                    wc.ptr(),
                    dxc.ptr(),
                    g.batch,
                    g.c_in,
                    g.h,
                    g.w,
                    g.k_h,
                    g.k_w,
                    g.stride_h,
                    g.stride_w,
                    g.pad_h,
                    g.pad_w,
                    g.dilation_h,
                    g.dilation_w,
                )
            });
            launch(wshape.0, wshape.1, |c| unsafe {
                dev::conv::depthwise_conv2d_backward_filter(
                    c,
                    xc.ptr(),
                    dyc.ptr(),
                    dwc.ptr(),
                    g.batch,
                    g.c_in,
                    g.h,
                    g.w,
                    g.k_h,
                    g.k_w,
                    g.stride_h,
                    g.stride_w,
                    g.pad_h,
                    g.pad_w,
                    g.dilation_h,
                    g.dilation_w,
                )
            });
        }
    }
    (yc.to_vec(), dxc.to_vec(), dwc.to_vec())
}

#[test]
fn convolution_passes_tiled_and_depthwise() {
    let Some(gpu) = gpu() else { return };
    let shapes = [
        Conv2dGeom {
            batch: 2,
            c_in: 3,
            h_in: 17,
            w_in: 19,
            c_out: 8,
            kernel_h: 3,
            kernel_w: 3,
            stride_h: 2,
            stride_w: 2,
            pad_h: 1,
            pad_w: 1,
            dilation_h: 1,
            dilation_w: 1,
            groups: 1,
        },
        Conv2dGeom {
            batch: 2,
            c_in: 16,
            h_in: 9,
            w_in: 9,
            c_out: 24,
            kernel_h: 1,
            kernel_w: 1,
            stride_h: 1,
            stride_w: 1,
            pad_h: 0,
            pad_w: 0,
            dilation_h: 1,
            dilation_w: 1,
            groups: 1,
        },
        Conv2dGeom {
            batch: 2,
            c_in: 12,
            h_in: 11,
            w_in: 10,
            c_out: 12,
            kernel_h: 3,
            kernel_w: 3,
            stride_h: 2,
            stride_w: 2,
            pad_h: 1,
            pad_w: 1,
            dilation_h: 1,
            dilation_w: 1,
            groups: 12,
        },
    ];
    for geo in &shapes {
        let (x_len, w_len, y_len) = (geo.input_len(), geo.weight_len(), geo.output_len());
        let (x, w, dy) = (values(x_len, 5), values(w_len, 6), values(y_len, 7));
        let (xg, wg, dyg) = (up(&gpu, &x), up(&gpu, &w), up(&gpu, &dy));
        let (mut yg, mut dxg, mut dwg) = (
            gpu.alloc(y_len).unwrap(),
            gpu.alloc(x_len).unwrap(),
            gpu.alloc(w_len).unwrap(),
        );
        gpu.conv2d_forward(geo, &xg, &wg, None, &mut yg).unwrap();
        gpu.conv2d_backward_data(geo, &dyg, &wg, &mut dxg).unwrap();
        gpu.conv2d_backward_filter(geo, &xg, &dyg, &mut dwg)
            .unwrap();
        let (y, dx, dw) = conv_cpu(geo, &x, &w, &dy);
        assert_close(&format!("conv y {geo:?}"), &down(&gpu, &yg), &y, 1e-4);
        assert_close(&format!("conv dx {geo:?}"), &down(&gpu, &dxg), &dx, 1e-4);
        assert_close(&format!("conv dw {geo:?}"), &down(&gpu, &dwg), &dw, 1e-4);
    }
}

#[test]
fn batch_norm_train_and_eval() {
    let Some(gpu) = gpu() else { return };
    let (batch, channels, plane) = (3u32, 5u32, 37u32);
    let len = (batch * channels * plane) as usize;
    let (x, dy) = (values(len, 8), values(len, 9));
    let (gamma, beta) = (values(channels as usize, 10), values(channels as usize, 11));
    let c = channels as usize;
    let (xg, dyg, gg, bg) = (
        up(&gpu, &x),
        up(&gpu, &dy),
        up(&gpu, &gamma),
        up(&gpu, &beta),
    );
    let mut yg = gpu.alloc(len).unwrap();
    let (mut mean, mut inv_std, mut rm, mut rv) = (
        gpu.zeros(c).unwrap(),
        gpu.zeros(c).unwrap(),
        gpu.zeros(c).unwrap(),
        up(&gpu, &vec![1.0; c]),
    );
    let shape = BatchNormGeom {
        batch: batch as usize,
        channels: c,
        spatial: plane as usize,
    };
    let act = Activation::LEAKY_0_1;
    gpu.batch_norm_train_forward(
        &shape,
        act,
        &xg,
        &gg,
        &bg,
        &mut yg,
        (&mut mean, &mut inv_std),
        (&mut rm, &mut rv),
        1e-5,
        0.9,
    )
    .unwrap();
    let (mut dxg, mut dgg, mut dbg) = (
        gpu.alloc(len).unwrap(),
        gpu.zeros(c).unwrap(),
        gpu.zeros(c).unwrap(),
    );
    gpu.batch_norm_train_backward(
        &shape,
        act,
        &xg,
        &yg,
        &dyg,
        &gg,
        (&mean, &inv_std),
        &mut dxg,
        &mut dgg,
        &mut dbg,
    )
    .unwrap();

    let (xc, dyc, gc, bc) = (
        DeviceBuf::new(&x),
        DeviceBuf::new(&dy),
        DeviceBuf::new(&gamma),
        DeviceBuf::new(&beta),
    );
    let (yc, mc, sc, rmc, rvc) = (
        DeviceBuf::filled(len, 0.0),
        DeviceBuf::filled(c, 0.0),
        DeviceBuf::filled(c, 0.0),
        DeviceBuf::filled(c, 0.0),
        DeviceBuf::filled(c, 1.0),
    );
    let (dxc, dgc, dbc) = (
        DeviceBuf::filled(len, 0.0),
        DeviceBuf::filled(c, 0.0),
        DeviceBuf::filled(c, 0.0),
    );
    let block = Dim3::x(dev::reduce::REDUCE_THREADS);
    launch(Dim3::x(channels), block, |t| unsafe {
        dev::batch_norm::batch_norm_train_forward(
            t,
            xc.ptr(),
            gc.ptr(),
            bc.ptr(),
            yc.ptr(),
            mc.ptr(),
            sc.ptr(),
            rmc.ptr(),
            rvc.ptr(),
            batch,
            channels,
            plane,
            1e-5,
            0.9,
            dev::elementwise::ACT_LEAKY_RELU,
            0.1,
        )
    });
    launch(Dim3::x(channels), block, |t| unsafe {
        dev::batch_norm::batch_norm_train_backward(
            t,
            xc.ptr(),
            yc.ptr(),
            dyc.ptr(),
            gc.ptr(),
            mc.ptr(),
            sc.ptr(),
            dxc.ptr(),
            dgc.ptr(),
            dbc.ptr(),
            batch,
            channels,
            plane,
            dev::elementwise::ACT_LEAKY_RELU,
            0.1,
        )
    });
    assert_close("bn y", &down(&gpu, &yg), &yc.to_vec(), 1e-4);
    assert_close("bn running var", &down(&gpu, &rv), &rvc.to_vec(), 1e-5);
    assert_close("bn dx", &down(&gpu, &dxg), &dxc.to_vec(), 1e-4);
    assert_close("bn dgamma", &down(&gpu, &dgg), &dgc.to_vec(), 1e-4);
    assert_close("bn dbeta", &down(&gpu, &dbg), &dbc.to_vec(), 1e-4);
}

#[test]
fn decode_and_nms() {
    let Some(gpu) = gpu() else { return };
    let level = YoloLevel {
        batch: 2,
        classes: 20,
        grid_h: 10,
        grid_w: 10,
        downsample: 32,
        anchors: [116.0, 90.0, 156.0, 198.0, 373.0, 326.0],
        scale_x_y: 1.0,
    };
    let cells = (level.batch * 3 * level.grid_h * level.grid_w) as usize;
    let x: Vec<f32> = values(cells * 25, 12).iter().map(|v| v * 3.0).collect();
    let sizes = [320.0f32, 320.0, 480.0, 640.0];
    let (mut boxes, mut scores) = (
        gpu.alloc(cells * 4).unwrap(),
        gpu.alloc(cells * 20).unwrap(),
    );
    gpu.yolo_decode(
        &level,
        &up(&gpu, &x),
        &up(&gpu, &sizes),
        &mut boxes,
        &mut scores,
        0.01,
        true,
    )
    .unwrap();
    let (xc, sc) = (DeviceBuf::new(&x), DeviceBuf::new(&sizes));
    let (bc, scc) = (
        DeviceBuf::filled(cells * 4, 0.0),
        DeviceBuf::filled(cells * 20, 0.0),
    );
    let a = level.anchors;
    launch_independent(GRID.0, GRID.1, |c| unsafe {
        dev::yolo_decode::yolo_decode(
            c,
            xc.ptr(),
            sc.ptr(),
            bc.ptr(),
            scc.ptr(),
            2,
            20,
            10,
            10,
            32,
            a[0],
            a[1],
            a[2],
            a[3],
            a[4],
            a[5],
            0.01,
            1.0,
            1,
        )
    });
    assert_close("decode boxes", &down(&gpu, &boxes), &bc.to_vec(), 1e-3);
    assert_close("decode scores", &down(&gpu, &scores), &scc.to_vec(), 1e-4);

    // NMS of image 0 on the GPU against the host crate's emulated pipeline is
    // covered by the device crate; here: GPU result equals greedy NMS on the
    // GPU's own decoded boxes (downloaded), computed on the host.
    let per_image = cells / 2;
    let host_boxes = down(&gpu, &boxes)[..per_image * 4].to_vec();
    let host_scores = down(&gpu, &scores)[..per_image * 20].to_vec();
    let options = NmsOptions {
        score_thresh: 0.01,
        iou_thresh: 0.45,
        top_k: 1000,
        keep_top_k: 100,
        pixel_offset: 1.0,
        class_offset: 4096.0,
    };
    let kept = gpu
        .nms(
            &up(&gpu, &host_boxes),
            &up(&gpu, &host_scores),
            20,
            &options,
        )
        .unwrap();
    let mut order: Vec<usize> = (0..host_scores.len())
        .filter(|&i| host_scores[i] > 0.01)
        .collect();
    order.sort_by(|&a, &b| host_scores[b].total_cmp(&host_scores[a]).then(a.cmp(&b)));
    order.truncate(1000);
    let iou = |a: usize, b: usize| {
        let (p, q) = (&host_boxes[a * 4..a * 4 + 4], &host_boxes[b * 4..b * 4 + 4]);
        let area = |r: &[f32]| (r[2] - r[0] + 1.0).max(0.0) * (r[3] - r[1] + 1.0).max(0.0);
        let iw = p[2].min(q[2]) - p[0].max(q[0]) + 1.0;
        let ih = p[3].min(q[3]) - p[1].max(q[1]) + 1.0;
        if iw <= 0.0 || ih <= 0.0 {
            0.0
        } else {
            iw * ih / (area(p) + area(q) - iw * ih)
        }
    };
    let mut want: Vec<u32> = Vec::new();
    for &i in &order {
        if want.len() == 100 {
            break;
        }
        if want
            .iter()
            .all(|&k| k as usize % 20 != i % 20 || iou(k as usize / 20, i / 20) <= 0.45)
        {
            want.push(i as u32);
        }
    }
    assert_eq!(kept, want);
}

/// The same sequence of `Backend` calls on the CPU backend and on the GPU:
/// every output downloaded, named, for comparison.
fn backend_ops<B: pulsefocus_core::Backend>(b: &B) -> Vec<(String, Vec<f32>)> {
    use pulsefocus_core::backend::{
        Activation, BatchNormGeom, ChannelCopy, Conv2dGeom, PoolGeom, SgdStep,
    };
    let mut out = Vec::new();
    let buffer = |host: &[f32]| {
        let mut buf = b.alloc(host.len());
        b.upload(host, &mut buf);
        buf
    };
    let read = |buf: &B::Buffer, len: usize| {
        let mut host = vec![0.0; len];
        b.download(buf, &mut host);
        host
    };
    let geometries = [
        // Dilated, strided differently per axis, grouped.
        Conv2dGeom {
            batch: 2,
            c_in: 6,
            h_in: 11,
            w_in: 9,
            c_out: 4,
            kernel_h: 3,
            kernel_w: 3,
            stride_h: 2,
            stride_w: 1,
            pad_h: 2,
            pad_w: 1,
            dilation_h: 2,
            dilation_w: 1,
            groups: 2,
        },
        // Depthwise 3x3 stride 2 (MobileNet) and pointwise 1x1 (GEMM path).
        Conv2dGeom {
            batch: 2,
            c_in: 8,
            h_in: 10,
            w_in: 10,
            c_out: 8,
            kernel_h: 3,
            kernel_w: 3,
            stride_h: 2,
            stride_w: 2,
            pad_h: 1,
            pad_w: 1,
            dilation_h: 1,
            dilation_w: 1,
            groups: 8,
        },
        Conv2dGeom {
            batch: 2,
            c_in: 8,
            h_in: 10,
            w_in: 10,
            c_out: 12,
            kernel_h: 1,
            kernel_w: 1,
            stride_h: 1,
            stride_w: 1,
            pad_h: 0,
            pad_w: 0,
            dilation_h: 1,
            dilation_w: 1,
            groups: 1,
        },
    ];
    for (i, g) in geometries.iter().enumerate() {
        let (x, w, dy) = (
            buffer(&values(g.input_len(), 20)),
            buffer(&values(g.weight_len(), 21)),
            buffer(&values(g.output_len(), 22)),
        );
        let bias = buffer(&values(g.c_out, 23));
        let mut ws = b.alloc(b.conv2d_workspace_len(g).max(1));
        let (mut y, mut dx, mut dw, mut db) = (
            b.alloc(g.output_len()),
            b.alloc(g.input_len()),
            b.alloc(g.weight_len()),
            b.alloc(g.c_out),
        );
        // Every kind with a bias, depthwise too (as the CPU accepts).
        let with_bias = true;
        b.conv2d_forward(g, &x, &w, with_bias.then_some(&bias), &mut y, &mut ws);
        b.conv2d_backward_data(g, &dy, &w, &mut dx, &mut ws);
        b.conv2d_backward_filter(g, &x, &dy, &mut dw, with_bias.then_some(&mut db), &mut ws);
        out.push((format!("conv{i} y"), read(&y, g.output_len())));
        out.push((format!("conv{i} dx"), read(&dx, g.input_len())));
        out.push((format!("conv{i} dw"), read(&dw, g.weight_len())));
        if with_bias {
            out.push((format!("conv{i} dbias"), read(&db, g.c_out)));
        }
    }
    let g = BatchNormGeom {
        batch: 2,
        channels: 3,
        spatial: 50,
    };
    let act = Activation::LEAKY_0_1;
    let (x, dy) = (buffer(&values(g.len(), 24)), buffer(&values(g.len(), 25)));
    let (scale, offset) = (buffer(&[1.0, 0.5, 2.0]), buffer(&[0.0, 0.1, -0.2]));
    let (mut rm, mut rv) = (buffer(&[0.0; 3]), buffer(&[1.0; 3]));
    let (mut mean, mut inv_std, mut y) = (b.alloc(3), b.alloc(3), b.alloc(g.len()));
    b.batch_norm_forward_train(
        &g,
        act,
        0.9,
        1e-5,
        &x,
        &scale,
        &offset,
        &mut rm,
        &mut rv,
        &mut mean,
        &mut inv_std,
        &mut y,
    );
    let (mut dx, mut ds, mut doff) = (b.alloc(g.len()), b.alloc(3), b.alloc(3));
    b.batch_norm_backward_train(
        &g, act, &x, &y, &dy, &scale, &mean, &inv_std, &mut dx, &mut ds, &mut doff,
    );
    for (name, buf, len) in [
        ("bn y", &y, g.len()),
        ("bn dx", &dx, g.len()),
        ("bn dscale", &ds, 3),
        ("bn doffset", &doff, 3),
        ("bn running var", &rv, 3),
    ] {
        out.push((name.to_string(), read(buf, len)));
    }
    let p = PoolGeom {
        batch: 2,
        channels: 3,
        h_in: 9,
        w_in: 8,
        kernel: 3,
        stride: 2,
        pad: 1,
    };
    let x = buffer(&values(p.input_len(), 26));
    let dy = buffer(&values(p.output_len(), 27));
    let (mut y, mut dx) = (b.alloc(p.output_len()), b.alloc(p.input_len()));
    b.max_pool_forward(&p, &x, &mut y);
    b.max_pool_backward(&p, &x, &dy, &mut dx);
    out.push(("pool y".into(), read(&y, p.output_len())));
    out.push(("pool dx".into(), read(&dx, p.input_len())));
    let (mut up, mut back) = (b.alloc(6 * 4 * 5 * 4), b.alloc(6 * 4 * 5));
    b.upsample2x_forward(6, 4, 5, &x, &mut up);
    b.upsample2x_backward(6, 4, 5, &up, &mut back);
    out.push(("upsample".into(), read(&back, 6 * 4 * 5)));
    let copy = ChannelCopy {
        batch: 2,
        spatial: 12,
        src_channels: 3,
        src_first: 1,
        dst_channels: 5,
        dst_first: 2,
        count: 2,
    };
    let mut dst = buffer(&values(2 * 5 * 12, 28));
    b.copy_channels(&copy, &x, &mut dst);
    out.push(("copy_channels".into(), read(&dst, 2 * 5 * 12)));
    let (mut param, grad, mut velocity) = (
        buffer(&values(100, 29)),
        buffer(&values(100, 30)),
        buffer(&values(100, 31)),
    );
    b.sgd_momentum(
        &SgdStep {
            lr: 0.01,
            momentum: 0.9,
            weight_decay: 5e-4,
        },
        100,
        &mut param,
        &grad,
        &mut velocity,
    );
    out.push(("sgd param".into(), read(&param, 100)));
    out.push((
        "sum, sum of squares".into(),
        vec![b.sum(100, &param) as f32, b.sum_squares(100, &param) as f32],
    ));
    out
}

#[test]
fn gpu_backend_matches_the_cpu_backend() {
    // On the GPU when there is one, else on the emulated GPU: the same host
    // code either way.
    let gpu_backend = match gpu() {
        Some(gpu) => pulsefocus_gpu::GpuBackend::new(gpu),
        None => pulsefocus_gpu::GpuBackend::emulated().unwrap(),
    };
    let (cpu, gpu) = (
        backend_ops(&pulsefocus_core::CpuBackend::new()),
        backend_ops(&gpu_backend),
    );
    for ((name, c), (_, g)) in cpu.iter().zip(&gpu) {
        assert_close(name, g, c, 1e-4);
    }
}
