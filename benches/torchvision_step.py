"""What the torchvision detector scripts share (`train_step_faster_rcnn_torch.py`,
`train_step_mask_rcnn_torch.py`, `train_step_retinanet_torch.py`): one
800-pixel picture and 81 classes by default with a --lr flag, the batch's
boxes as `bench train-step` draws them, and the training step timed against
pulsefocus's on the same config."""
import torch

import torch_step
from train_step_torch import synthetic_boxes


def arguments():
    """torch_step's command line with the detectors' defaults and --lr."""
    ap = torch_step.arguments(size=800, classes=81)
    ap.set_defaults(batch=1, steps=2)
    ap.add_argument("--lr", type=float, default=0.0,
                    help="learning rate of both sides (default 0: see the script's doc)")
    return ap


def paddle_boxes(args):
    """Per picture, the boxes `[x1, y1, x2, y2]` in pixels as Paddle's reader
    gives them (x2 = x1 + w - 1), and their classes numbered from 0."""
    cxcywh, labels = synthetic_boxes(args.batch, args.classes - 1)
    x1y1 = (cxcywh[..., :2] - cxcywh[..., 2:] / 2) * args.size
    x2y2 = x1y1 + cxcywh[..., 2:] * args.size - 1
    return [torch.cat([x1y1[b], x2y2[b]], -1) for b in range(args.batch)], labels


def compare(args, net, targets, config):
    """Momentum SGD as PaddleDetection's (0.9, weight decay 1e-4, --lr) on
    `net`'s trained parameters, random pictures of --size, and the step
    (summed losses, backward, update) timed against `pulsefocus bench
    train-step -c CONFIG` with the same class count and learning rate."""
    params = [p for p in net.parameters() if p.requires_grad]
    opt = torch.optim.SGD(params, lr=args.lr, momentum=0.9, weight_decay=1e-4)
    images = list(torch.rand(args.batch, 3, args.size, args.size))

    def step():
        opt.zero_grad(set_to_none=True)
        loss = sum(net(images, targets).values())
        loss.backward()
        opt.step()
        return loss.item()

    torch_step.compare(args, step, ["-c", config, "-o", f"num_classes={args.classes}",
                                    f"LearningRate.base_lr={args.lr}"])
