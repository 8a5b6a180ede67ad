"""Confirmation on larger validation draws (600 images per set): the top trials of results/tune-fmnist6 by
objective (16, 9) and the cheapest close one (14), same settings, re-scored."""
import optuna
optuna.logging.set_verbosity(optuna.logging.WARNING)
src = optuna.load_study(study_name="diffguard-cfg", storage="sqlite:///results/tune-fmnist6/tune.sqlite")
dst = optuna.create_study(study_name="diffguard-cfg", storage="sqlite:///results/tune-fmnist6-confirm/tune.sqlite",
                          direction="maximize", load_if_exists=True)
for n in (16, 9, 14):
    dst.enqueue_trial(dict(src.trials[n].params), user_attrs={"confirms": f"results/tune-fmnist6 trial {n}"})
print([(t.number, t.state.name, t.params.get("inversion.steps")) for t in dst.trials])
