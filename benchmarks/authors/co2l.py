"""Co2L through the authors' own code — chaht01/Co2L (Cha, Lee & Shin, ICCV 2021): ``main.py`` (representation) and
``main_linear_buffer.py`` (linear probe on the last task + buffer), as run.sh runs them — on protosphere's
Seq-FashionMNIST work (configs/seq-fmnist/co2l.yaml, co2l-200.yaml), to compare the whole pipeline with protosphere's.

    python benchmarks/authors/co2l.py --co2l /work/authors/Co2L --seed 0 --buffer 200 --out runs/authors

Training is their ``main.main()``; the probe is their ``main_linear_buffer.main()`` on the checkpoint saved after each
task. Everything runs unchanged except these replacements:

 1. data: ``torchvision.datasets.CIFAR10`` -> common.SeqFashionMNIST (protosphere's scenario for the config and seed:
    5 tasks x 2 classes in its class order, labels re-indexed 2t, 2t+1 per task), so their task subsets
    (``main.py:309-321``, ``main_ce_buffer.py:51-80``), ``set_replay_samples`` (``main.py:189``) and loaders run as is;
 2. transforms: the CIFAR pipelines they build inline (``main.py:295-306``, ``main_ce_buffer.py:33-49``) are
    translated by the dataset to RandomResizedCrop(28, scale 0.2-1), horizontal flip, ColorJitter(brightness 0.4,
    contrast 0.4) with p 0.8, ToTensor, Normalize(Fashion-MNIST mean/std); evaluation: ToTensor, Normalize;
 3. backbone: ``model_dict['protosphere_small_cnn']`` = protosphere's small_cnn, ``SupConResNet.head`` = protosphere's
    projector (Linear 256-256, ReLU, Linear 256-128, the same layout as theirs), both with the initial weights of
    protosphere's run of the same config and seed; their forward is kept;
 4. CPU: ``Tensor.cuda`` is the identity (``main.py:417``, ``main_linear_buffer.py:171-172,229-230`` call it
    unguarded), the probe's ``set_model`` also loads the checkpoint on CPU (``main_linear_buffer.py:133-150`` loads it
    only under CUDA), one thread, ``--num_workers 0``, no ``--syncBN`` (apex, multi-GPU only); torchvision imports
    without its CUDA-built C ops (their schemas declared; no op is used);
 5. schedule through their own flags: 5 epochs per task, the first too (``--start_epoch``), batch 128, SGD lr 0.1
    momentum 0.9 weight decay 1e-4 (their defaults), ``--cosine``, no warm-up (batch <= 256); ``--temp 0.5``
    (tau_base 0.07 is their default), IRD ``--current_temp 0.2 --past_temp 0.01``, ``--distill_power 1.0``;
 6. probe through their flags: lr 0.1, ``--cosine``, batch 256, max(10, ceil(300 / steps per epoch)) epochs (their
    run.sh: lr 1, step decay, 100 epochs); memory-free runs: the probe's 200 stored samples are picked by their own
    ``set_replay_samples`` with mem_size 200 on a private random stream (protosphere's eval.probe_buffer_size);
 7. seeds: their code seeds nothing; protosphere's seeding and model build (for the initial weights), then
    random/numpy/torch seeded with the seed before training and before each probe; output folders under DIR/work
    (their paths are relative to the working directory); checkpoints: ``argparse.Namespace`` allowed in torch.load
    (torch >= 2.6); tensorboard_logger imported with protobuf's pure-Python backend;
 8. recording only: their train loop's AverageMeters record each step's logged values (total loss, distillation),
    their ``validate`` hands over the classifier outputs it scores (per-task class-IL / task-IL).
"""

from __future__ import annotations

import os
import sys
import time

import common  # first: thread and protobuf settings before torch
import torch  # noqa: E402


def main(argv=None):
    args = common.parser("Co2L", "--co2l", "/work/authors/Co2L").parse_args(argv)
    wall_start = time.time()
    args.out, args.co2l = args.out.resolve(), args.co2l.resolve()  # before the chdir below
    config_name = "co2l" if args.buffer == 0 else "co2l-200"
    name = f"co2l-{config_name}-seed{args.seed}"
    common.import_torchvision()
    common.use_cpu()
    common.allow_their_checkpoints()
    start = common.protosphere_start(config_name, args.seed)
    environment = common.machine()
    cfg, method = start.config, start.config.method
    epochs = args.epochs or cfg.train.epochs
    checks = {
        "base_temperature": (method.base_temperature, 0.07),
        "projection_dim": (method.projection_dim, 128),
        "warmup_epochs": (cfg.optimizer.warmup_epochs, 0),
        "scheduler": (cfg.optimizer.scheduler, "cosine"),
    }
    for key, (ours, theirs_fixed) in checks.items():  # what their flags cannot express must match their default
        if ours != theirs_fixed:
            raise SystemExit(f"{config_name}.yaml has {key}={ours}; Co2L's code fixes it at {theirs_fixed}")
    workdir = args.out / "work" / name
    probe_dir = workdir / "probe_buffer"
    probe_dir.mkdir(parents=True, exist_ok=True)
    arrays = common.install_dataset(start, args.fraction, args.seed)
    train_argv = [
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
        "--temp",
        method.temperature,
        "--current_temp",
        method.ird_current_temperature,
        "--past_temp",
        method.ird_past_temperature,
        "--distill_power",
        method.distill_weight,
        "--num_workers",
        0,
        "--trial",
        f"seed{args.seed}",
    ]
    train_argv = [str(a) for a in train_argv]
    common.announce(
        f"Co2L on Seq-FashionMNIST: {name}",
        common.numbered_items(__doc__),
        {
            "checkout": str(args.co2l),
            "commit": common.checkout_commit(args.co2l),
            "train_argv": " ".join(train_argv),
            "fraction": args.fraction,
            "train_rows": len(arrays["train"][1]),
            "test_rows": len(arrays["test"][1]),
            "init_checksum": start.checksum,
        },
    )

    # --- their modules, with the replacements -------------------------------------------------------------------
    common.import_from_checkout(args.co2l, "main.py")
    os.chdir(workdir)  # their save_*/ folders are relative (main.py:138-140)
    import main as co2l_main
    import main_linear_buffer
    from networks import resnet_big

    model_class = common.install_backbone(resnet_big.model_dict, resnet_big.SupConResNet, start)
    co2l_main.SupConResNet = main_linear_buffer.SupConResNet = model_class
    losses = common.LossRecorder()
    co2l_main.AverageMeter = losses.meter_class(co2l_main.AverageMeter)
    co2l_main.train = losses.wrap_train(co2l_main.train)
    state = {}
    parse_option = co2l_main.parse_option

    def parse_and_keep():
        state["opt"] = parse_option()
        return state["opt"]

    co2l_main.parse_option = parse_and_keep
    if args.buffer == 0:
        co2l_main.set_replay_samples = common.with_probe_buffer(co2l_main.set_replay_samples, args.seed, probe_dir)
    load_model = main_linear_buffer.set_model

    def set_model(opt, cls_num_list):
        model, classifier, criterion = load_model(opt, cls_num_list)
        if not torch.cuda.is_available():  # main_linear_buffer.py:133-150 calls load_state_dict only under CUDA
            weights = torch.load(opt.ckpt, map_location="cpu")["model"]
            model.load_state_dict({k.replace("module.", ""): v for k, v in weights.items()})
        return model, classifier, criterion

    main_linear_buffer.set_model = set_model
    probe = common.ProbeRecorder()
    main_linear_buffer.validate = probe.wrap_validate(main_linear_buffer.validate)

    # --- training: their main() ---------------------------------------------------------------------------------
    sys.argv = ["main.py", *train_argv]
    common.seed_all(args.seed)
    began = time.time()
    co2l_main.main()
    train_s = time.time() - began
    opt = state["opt"]
    num_tasks, per_task = opt.n_cls // opt.cls_per_task, opt.cls_per_task

    # --- the linear probe after each task: their main_linear_buffer.main() --------------------------------------
    tasks = range(num_tasks) if args.probe_tasks == "all" else [num_tasks - 1]
    class_il, task_il = [], []  # row t: test tasks 0..t after task t (the classes their probe tests)
    probes, eval_s = [], 0.0
    logs = probe_dir if args.buffer == 0 else workdir / opt.log_folder
    for t in tasks:
        stored, rows = common.stored_rows(logs, opt, t, arrays)
        probe_epochs = common.probe_epochs(rows, args.probe_epochs)
        eval_argv = [
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
            "--ckpt",
            workdir / opt.save_folder,
            "--logpt",
            logs,
            "--print_freq",
            1000,
        ]
        sys.argv = ["main_linear_buffer.py", *[str(a) for a in eval_argv]]
        common.seed_all(args.seed)
        began = time.time()
        main_linear_buffer.main()
        eval_s += time.time() - began
        _, _, corr, cnt, their_task = probe.result
        row_class, row_task, record = common.probe_row(
            probe, t, per_task, (corr, cnt, their_task), stored, arrays, probe_epochs, rows, began
        )
        class_il.append(row_class)
        task_il.append(row_task)
        probes.append(record)

    identity = {
        "code": "co2l",
        "repository": "chaht01/Co2L",
        "commit": common.checkout_commit(args.co2l),
        "config": config_name,
        "seed": args.seed,
        "buffer": args.buffer,
        "method": "co2l",
        "fraction": args.fraction,
        "epochs": epochs,
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
