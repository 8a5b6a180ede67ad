"""Cheaper neighbours of trial 9 (the best so far: the fmnist6-cfg preset at 25 DDIM steps)."""
import optuna
optuna.logging.set_verbosity(optuna.logging.WARNING)
s = optuna.load_study(study_name="diffguard-cfg", storage="sqlite:///results/tune-fmnist6/tune.sqlite")
base = dict(s.trials[9].params)
for change in ({"inversion.steps": 10}, {"cfg.scale": 5.0}, {"inversion.cap_fraction": 0.8}):
    s.enqueue_trial({**base, **change}, user_attrs={"neighbour_of": 9})
print([(t.number, t.state.name) for t in s.trials][-6:])
