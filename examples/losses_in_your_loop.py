"""Use protosphere's losses and prototypes in a training loop of your own, without its runner.

A small MLP embeds scikit-learn's 8×8 digits on the unit sphere and is trained with the focal neural-collapse
contrastive loss (FNC2; Dang et al., WACV 2025) towards fixed simplex-ETF prototypes W (K, d): in each batch the rows
of a class attract each other and their class's prototype and repel the other rows. Classification needs no trained
head: the predicted class is the nearest prototype, ``argmax_k z·w_k``. Every loss in ``protosphere.losses`` is a
pure function of unit-norm embeddings (tensors in, scalar out) with a module form of the same call shape, as in
PyTorch Metric Learning; their docstrings give the equation, the paper and the shapes. Swapping the loss is one line::

    loss = supcon(z, y, temperature=0.1)                         # SupCon (Khosla et al. 2020), no prototypes
    loss = prototype_ce(z, y, prototypes, temperature=0.1)       # CE on cosine logits to the ETF (NCT's CE head)
    loss = dr_loss(z, y, prototypes)                             # ½ mean (z·w_y − 1)² (NC-FSCIL's DR loss)

Run it (a few seconds on one CPU core; needs scikit-learn for the data)::

    python losses_in_your_loop.py

Scale it up: any encoder and dataset of yours; in a continual loop pass the current task's classes as
``current_classes`` and the earlier tasks' as ``previous_classes`` (their prototypes then join every denominator as
negatives, FNC2's pseudo-replay), and add ``protosphere.losses.hsd`` for distillation from the previous model.
"""

import torch
import torch.nn.functional as F
from sklearn.datasets import load_digits
from sklearn.model_selection import train_test_split
from torch import nn

from protosphere.geometry import simplex_etf
from protosphere.losses import FNC2Loss

torch.manual_seed(0)
digits = load_digits()
x = torch.tensor(digits.data, dtype=torch.float32) / 16.0  # (1797, 64) pixels in [0, 1]
y = torch.tensor(digits.target)
x_train, x_test, y_train, y_test = train_test_split(x, y, test_size=0.2, stratify=y, random_state=0)

num_classes, dim = 10, 32
prototypes = simplex_etf(num_classes, dim, seed=0)  # (K, d) unit rows, pairwise cosine −1/(K−1), never trained
encoder = nn.Sequential(nn.Linear(64, 128), nn.ReLU(), nn.Linear(128, 128), nn.ReLU(), nn.Linear(128, dim))
criterion = FNC2Loss(temperature=0.5, base_temperature=0.07, gamma=1)  # the authors' settings
optimizer = torch.optim.Adam(encoder.parameters(), lr=1e-3)
all_classes = list(range(num_classes))  # one task: every class is current, none previous

for epoch in range(10):
    total, batches = 0.0, 0
    for rows in torch.randperm(len(x_train)).split(128):
        z = F.normalize(encoder(x_train[rows]), dim=1)  # (B, d) on the unit sphere
        loss = criterion(z, y_train[rows], prototypes, current_classes=all_classes, previous_classes=[])
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        total, batches = total + loss.item(), batches + 1
    print(f"epoch {epoch + 1}: loss {total / batches:.4f}")

with torch.no_grad():
    z = F.normalize(encoder(x_test), dim=1)
    predicted = (z @ prototypes.T).argmax(1)  # nearest prototype = largest cosine
accuracy = 100 * (predicted == y_test).double().mean().item()
print(f"nearest-prototype test accuracy: {accuracy:.2f} % ({len(y_test)} images, chance {100 / num_classes:.0f} %)")
