"""Image VAEs and adversarial autoencoders on MNIST, split by stage like the sketch side and sharing its KL code and checkpoints.

* :mod:`sketchvae.image.data`      IDX files (read / write / validate), download + verify, binarised batches
* :mod:`sketchvae.image.models`    MLP / conv / class-conditional VAEs (kind ``"image_vae"``), ELBO terms
* :mod:`sketchvae.image.aae`       adversarial autoencoder (kind ``"image_aae"``): priors, losses, its trainer
* :mod:`sketchvae.image.classifier` the small CNN digit classifier (kind ``"image_classifier"``), an instrument
* :mod:`sketchvae.image.evaluate`  test ELBO and the importance-weighted log p(x) (IWAE bound, k up to 5000)
* :mod:`sketchvae.image.train`     training loop: run folder, best / last checkpoints, exact resume
* :mod:`sketchvae.image.measure`   Parzen window, classifier scores, attribute vectors: one way for every model
* :mod:`sketchvae.image.render`    PNG grids and strips (numpy + pillow)
* :mod:`sketchvae.image.plots`     latent maps (matplotlib)

The command line is ``sketchvae mnist ...`` (:mod:`sketchvae.cli.mnist`).
"""
