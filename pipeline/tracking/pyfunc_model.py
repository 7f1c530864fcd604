"""The MLflow pyfunc model, logged as code ("models from code") with model/ beside it.

Input: (n, 3072) raw CIFAR pixels (0..255, uint8 or float, channel-major rows as in the batches).
Output: (n, 10) class probabilities. Needs only numpy (and MLflow to load it).
"""

import numpy as np
from mlflow.models import set_model
from mlflow.pyfunc import PythonModel


class CifarMLP(PythonModel):
    def load_context(self, context):
        from model.network import Params

        with np.load(context.artifacts["weights"]) as w:
            self.params = Params(w["W1"], w["b1"], w["W2"], w["b2"])
            self.mean, self.std = w["mean"], w["std"]
            self.tta_flip = bool(w["tta_flip"]) if "tta_flip" in w else False  # mirror-averaged, as it was tested

    def predict(self, context, model_input, params=None):
        from model.network import flip_averaged_probabilities, forward

        X = np.asarray(model_input.to_numpy() if hasattr(model_input, "to_numpy") else model_input, np.float32)
        if X.ndim == 1:
            X = X[None, :]
        if X.ndim != 2 or X.shape[1] != self.mean.shape[0]:
            raise ValueError(f"expected (n, {self.mean.shape[0]}) pixel rows; got shape {X.shape}")
        Xn = (X - self.mean) / self.std
        return flip_averaged_probabilities(self.params, Xn) if self.tta_flip else forward(self.params, Xn)[1]


set_model(CifarMLP())
