"""FNC2 + HSD through the authors' own code — dangtrunganh/samix (Dang et al., WACV 2025), run "without SAMix"
(``--loss fnc2``, README "To run without SAMix", scripts/train/fc_nccl/*.sh) — on protosphere's Seq-FashionMNIST
work (configs/seq-fmnist/fnc2.yaml, fnc2-200.yaml), so the whole pipeline can be compared with protosphere's.

    python benchmarks/authors/samix_fnc2.py --samix /work/authors/samix --seed 0 --buffer 0 --out runs/authors

Training is their ``main_train.main()``; the linear probe is their ``main_eval.evaluate_single_task`` on the
checkpoint saved after each task (their ``main_eval.py`` ``__main__`` block, lines 260-271, replayed: read config,
parse, seed, evaluate). Everything runs unchanged except these replacements:

 1. data: ``torchvision.datasets.CIFAR10`` -> common.SeqFashionMNIST (protosphere's scenario for the config and seed:
    5 tasks x 2 classes in its class order, labels re-indexed 2t, 2t+1 per task), so their task subsets
    (``pretrain_dataloader.py:337``, ``evaluate_dataloader.py:276-289``), ``set_replay_samples`` and loaders run as is;
 2. transforms: their CIFAR pipelines (``transforms_utils.py:427-444``) -> RandomResizedCrop(28, scale 0.2-1),
    horizontal flip, ColorJitter(brightness 0.4, contrast 0.4) with p 0.8, ToTensor, Normalize(Fashion-MNIST mean/std);
    evaluation: ToTensor, Normalize; one view for the probe as in their code, two (their TwoCropTransform) in training;
 3. backbone: ``model_dict['protosphere_small_cnn']`` = protosphere's small_cnn, ``SupConResNet.head`` = protosphere's
    projector (Linear 256-256, ReLU, Linear 256-128; theirs has a BatchNorm1d in it), both with the initial weights of
    protosphere's run of the same config and seed; their forward and distillation predictor (128) are kept;
 4. CPU: ``Tensor.cuda`` is the identity (``stab_loss.py:8`` calls it unguarded), their probe's ``set_model`` also loads
    the checkpoint on CPU (``main_eval.py:37-50`` loads it only under CUDA), one thread, ``--num_workers 0``;
    torchvision imports without its CUDA-built C ops (their schemas declared; no op is used);
 5. schedule through their own flags: 5 epochs per task, the first too (``--start_epoch``), batch 128, SGD lr 0.1
    momentum 0.9 weight decay 1e-4 (their defaults), ``--cosine``, no warm-up (batch <= 256); FNC2 tau 0.5 (tau_base
    0.07 is their default), gamma 1, IRD 0.2/0.01, S-PRD 0.2/0.1, ``--filter_distillation_point``;
 6. HSD marks: ``--main_mark 2`` and ``opt.second_mark = 4`` (``setup_training.py:226-230`` hard-codes 80 of their
    100 epochs): 30 % and 80 % of 5 epochs, rounded (``hsd_marks``);
 7. probe through their flags: lr 0.1, ``--cosine``, batch 256, max(10, ceil(300 / steps per epoch)) epochs;
    memory-free runs: the probe's 200 stored samples are picked by their own ``set_replay_samples`` with mem_size 200
    on a private random stream (their README: LOG_FOLDER_ZERO_MEM, a 200-sample log folder, for MEM_SIZE=0);
 8. seeds: protosphere's seeding and model build first (for the initial weights), then their own torch/numpy seeding
    (``main_train.py:175-176``, ``main_eval.py:265-266``); output folders under DIR/work (``config/base.yaml``'s
    root_save_folder); checkpoints: ``argparse.Namespace`` allowed in torch.load (torch >= 2.6);
 9. recording only: their train loop's AverageMeters record each step's logged values (total loss, distillation),
    their ``validate`` hands over the classifier outputs it scores (per-task class-IL / task-IL);
10. a bug fix: their ``FNC2.__init__`` (``main_loss_fnc2.py:20``) never runs ``nn.Module.__init__`` (its ``super()``
    reaches ``BasePrototypeBasedLoss.__init__``, which does not chain on), so ``--loss fnc2`` as published fails on the
    first call on any torch (``'FNC2' object has no attribute '_backward_hooks'``; on CUDA already at
    ``criterion.cuda()``); ``LOSSES['fnc2']`` is a subclass that runs ``nn.Module.__init__`` first, as their
    ``NCSAMix`` does (``main_loss_nc_samix.py:22-24``); the loss itself is untouched.
"""

from __future__ import annotations

import math
import os
import sys
import time
from pathlib import Path

import common  # first: thread and protobuf settings before torch
import numpy as np  # noqa: E402
import torch  # noqa: E402


def hsd_marks(epochs: int, fractions=(0.3, 0.8)) -> tuple[int, int]:
    """Integer (main_mark, second_mark) for ``epochs``: the fractions of the epochs rounded half up, kept inside what
    ``main_train.py:98`` asserts (0 < main < epochs - 1, main < second <= epochs). 5 epochs -> (2, 4)."""
    if epochs < 3:
        raise SystemExit(
            "samix's HSD needs at least 3 epochs per task (main_train.py:98 asserts "
            "0 < main_mark < epochs - 1); use --epochs 3 or more"
        )
    main = min(max(1, math.floor(fractions[0] * epochs + 0.5)), epochs - 2)
    return main, min(max(main + 1, math.floor(fractions[1] * epochs + 0.5)), epochs)


def main(argv=None) -> Path:
    args = common.parser("samix FNC2", "--samix", "/work/authors/samix").parse_args(argv)
    wall_start = time.time()
    args.out, args.samix = args.out.resolve(), args.samix.resolve()  # before the chdir below
    config_name = "fnc2" if args.buffer == 0 else "fnc2-200"
    name = f"samix-{config_name}-seed{args.seed}"
    common.import_torchvision()
    common.use_cpu()
    common.allow_their_checkpoints()
    start = common.protosphere_start(config_name, args.seed)
    environment = common.machine()
    cfg, method = start.config, start.config.method
    epochs = args.epochs or cfg.train.epochs
    main_mark, second_mark = hsd_marks(epochs, method.hsd_marks)
    checks = {
        "base_temperature": (method.base_temperature, 0.07),
        "projection_dim": (method.projection_dim, 128),
        "hsd_schedule": (method.hsd_schedule, "official"),
        "distillation": (method.distillation, "hsd"),
        "warmup_epochs": (cfg.optimizer.warmup_epochs, 0),
        "scheduler": (cfg.optimizer.scheduler, "cosine"),
    }
    for key, (ours, theirs_fixed) in checks.items():  # what their flags cannot express must match their default
        if ours != theirs_fixed:
            raise SystemExit(f"{config_name}.yaml has {key}={ours}; samix's code fixes it at {theirs_fixed}")
    workdir = args.out / "work" / name
    probe_dir = workdir / "probe_buffer"
    probe_dir.mkdir(parents=True, exist_ok=True)
    arrays = common.install_dataset(start, args.fraction, args.seed)
    train_argv = [
        "--seed",
        args.seed,
        "--batch_size",
        cfg.train.batch_size,
        "--model",
        common.BACKBONE_NAME,
        "--dataset",
        "cifar10",
        "--mem_size",
        args.buffer,
        "--epochs",
        epochs,
        "--start_epoch",
        epochs,
        "--learning_rate",
        cfg.optimizer.lr,
        "--momentum",
        cfg.optimizer.momentum,
        "--weight_decay",
        cfg.optimizer.weight_decay,
        "--cosine",
        "--temperature",
        method.temperature,
        "--current_temp",
        method.ird_current_temperature,
        "--past_temp",
        method.ird_past_temperature,
        "--current_temp_sprd",
        method.prd_current_temperature,
        "--past_temp_sprd",
        method.prd_past_temperature,
        "--distill_power",
        method.hsd_weight,
        "--num_workers",
        0,
        "--job_run_name",
        name,
        "--distillation",
        "hsd",
        "--loss",
        "fnc2",
        "--filter_distillation_point",
        "--predictor_hidden_dim",
        method.distill_predictor_hidden,
        "--main_mark",
        main_mark,
        "--focal_gamma",
        method.gamma,
    ]
    train_argv = [str(a) for a in train_argv]
    common.announce(
        f"samix (FNC2 + HSD) on Seq-FashionMNIST: {name}",
        common.numbered_items(__doc__),
        {
            "checkout": str(args.samix),
            "commit": common.checkout_commit(args.samix),
            "train_argv": " ".join(train_argv),
            "second_mark": second_mark,
            "fraction": args.fraction,
            "train_rows": len(arrays["train"][1]),
            "test_rows": len(arrays["test"][1]),
            "init_checksum": start.checksum,
        },
    )

    # --- their modules, with the replacements -------------------------------------------------------------------
    common.import_from_checkout(args.samix, "main_train.py")
    os.chdir(workdir)  # anything relative they write lands in the run's work folder
    import main_eval
    import main_train
    from config import config_reader
    from src.backbones import resnet_big

    def read_config(file_path=None):
        fixed = config_reader.read_config(str(args.samix / "config" / "base.yaml"))
        fixed["general"]["save_path_config"]["root_save_folder"] = str(workdir)
        return fixed

    from src.plas_losses import LOSSES

    class FNC2(LOSSES["fnc2"]):
        def __init__(self, **options):
            torch.nn.Module.__init__(self)  # what main_loss_fnc2.py:20 misses (replacement 10)
            super().__init__(**options)

    LOSSES["fnc2"] = FNC2
    model_class = common.install_backbone(resnet_big.model_dict, resnet_big.SupConResNet, start)
    main_train.SupConResNet = main_eval.SupConResNet = model_class
    main_train.read_config = read_config
    losses = common.LossRecorder()
    main_train.AverageMeter = losses.meter_class(main_train.AverageMeter)
    main_train.train = losses.wrap_train(main_train.train)
    state = {}
    parse_training = main_train.parse_all_training_args

    def parse_all_training_args(fixed_config):
        opt = parse_training(fixed_config)
        opt.second_mark = second_mark  # setup_training.py:226-230 sets 80 (of 100 epochs) for CIFAR
        state["opt"] = opt
        return opt

    main_train.parse_all_training_args = parse_all_training_args
    if args.buffer == 0:
        main_train.set_replay_samples = common.with_probe_buffer(main_train.set_replay_samples, args.seed, probe_dir)
    load_model = main_eval.set_model

    def set_model(opt):
        model, classifier, criterion = load_model(opt)
        if not torch.cuda.is_available():  # main_eval.py:37-50 calls load_state_dict only under CUDA
            weights = torch.load(opt.ckpt, map_location="cpu")["model"]
            model.load_state_dict({k.replace("module.", ""): v for k, v in weights.items()})
        return model, classifier, criterion

    main_eval.set_model = set_model
    probe = common.ProbeRecorder()
    main_eval.validate = probe.wrap_validate(main_eval.validate)

    # --- training: their main() ---------------------------------------------------------------------------------
    sys.argv = ["main_train.py", *train_argv]
    began = time.time()
    main_train.main()
    train_s = time.time() - began
    opt = state["opt"]
    num_tasks, per_task = opt.n_cls // opt.cls_per_task, opt.cls_per_task

    # --- the linear probe after each task: their main_eval ------------------------------------------------------
    tasks = range(num_tasks) if args.probe_tasks == "all" else [num_tasks - 1]
    class_il, task_il = [], []  # row t: test tasks 0..t after task t (the classes their probe tests)
    probes, eval_s = [], 0.0
    logs = probe_dir if args.buffer == 0 else Path(opt.log_folder)
    for t in tasks:
        stored, rows = common.stored_rows(logs, opt, t, arrays)
        probe_epochs = common.probe_epochs(rows, args.probe_epochs)
        eval_argv = [
            "--seed",
            args.seed,
            "--target_task",
            t,
            "--dataset",
            "cifar10",
            "--learning_rate",
            common.PROBE_LR,
            "--batch_size",
            common.PROBE_BATCH,
            "--epochs",
            probe_epochs,
            "--cosine",
            "--num_workers",
            0,
            "--model",
            common.BACKBONE_NAME,
            "--job_run_name",
            name,
            "--ckpt",
            opt.save_folder,
            "--logpt",
            logs,
            "--print_freq",
            1000,
        ]
        sys.argv = ["main_eval.py", *[str(a) for a in eval_argv]]
        began = time.time()
        eval_opt = main_eval.parse_all_evaluating_args(read_config(), main_eval.parse_general_evaluating_args())
        torch.manual_seed(eval_opt.seed)  # main_eval.py:264-266
        np.random.seed(eval_opt.seed)
        accuracy = main_eval.evaluate_single_task(eval_opt)
        eval_s += time.time() - began
        _, corr, cnt, their_task = probe.result
        row_class, row_task, record = common.probe_row(
            probe,
            t,
            per_task,
            (corr, cnt, their_task),
            stored,
            arrays,
            probe_epochs,
            rows,
            began,
            their_best_class_il=float(accuracy.best_acc[1]),
        )
        class_il.append(row_class)
        task_il.append(row_task)
        probes.append(record)

    identity = {
        "code": "samix",
        "repository": "dangtrunganh/samix",
        "commit": common.checkout_commit(args.samix),
        "config": config_name,
        "seed": args.seed,
        "buffer": args.buffer,
        "method": "fnc2 + hsd (--loss fnc2)",
        "fraction": args.fraction,
        "epochs": epochs,
        "hsd_marks": [main_mark, second_mark],
    }
    record = common.run_record(
        identity,
        class_il=class_il,
        task_il=task_il,
        probes=probes,
        losses=losses,
        tasks=tasks,
        num_tasks=num_tasks,
        wall_start=wall_start,
        train_s=train_s,
        eval_s=eval_s,
        start=start,
        train_argv=train_argv,
        doc=__doc__,
        environment=environment,
    )
    path = common.write_result(args.out, name, record)
    print(f"[harness] wrote {path}", flush=True)
    return path


if __name__ == "__main__":
    main()
