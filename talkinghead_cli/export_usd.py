"""USD stage of an animation (Pixar's ``usd-core``): ``animation.usdc``.

The stage (``/face``, a SkelRoot, Y up, metres per unit 1, ``timeCodesPerSecond`` and
``framesPerSecond`` = the animation's fps, time code i = frame i, the end time code at the
end of the speech) holds one mesh, ``/face/mesh``, with the template's topology (no
subdivision), UVs (``primvars:st``, face-varying) when the template has them, and a
UsdPreviewSurface material (non-metallic; the template's colour and texture). A variant
set ``motion`` says how it moves:

- ``points`` (the default): the vertices, time-sampled at every frame (what Blender's
  importer, Omniverse, Houdini and Maya read as a mesh cache);
- ``blendshapes`` (only for an ARKit-rig face): UsdSkel blend shapes under the rig's ARKit
  names (plus ``residualNN_pos``/``_neg`` for what the rig cannot express, as in the glTF),
  driven by a SkelAnimation's time-sampled ``blendShapeWeights``; a one-joint skeleton
  carries the binding, as UsdSkel asks.

Shapes: T frames, V vertices, F faces, N blend shapes.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np

from talkinghead_cli.atomic import atomic_file
from talkinghead_cli.errors import UserError
from talkinghead_cli.mesh_visuals import Material, Visuals


def _pxr():
    try:
        from pxr import Gf, Sdf, Usd, UsdGeom, UsdShade, UsdSkel, Vt
    except ImportError as e:
        raise UserError("USD export needs Pixar's usd-core", None,
                        'pip install "avtalk[usd]" (or usd-core), or drop usd from --format') from e
    return Gf, Sdf, Usd, UsdGeom, UsdShade, UsdSkel, Vt


def _prim_name(name: str) -> str:
    return name.replace("+", "_pos").replace("-", "_neg")


def _material(stage, mesh, material: Material | None, folder: Path, textured: bool) -> list[str]:
    """Bind a UsdPreviewSurface; copy the texture next to the stage. Returns files copied."""
    _, Sdf, _, _, UsdShade, _, _ = _pxr()
    m = material or Material()
    mat = UsdShade.Material.Define(stage, "/face/material")
    shader = UsdShade.Shader.Define(stage, "/face/material/surface")
    shader.CreateIdAttr("UsdPreviewSurface")
    shader.CreateInput("metallic", Sdf.ValueTypeNames.Float).Set(0.0)
    shader.CreateInput("roughness", Sdf.ValueTypeNames.Float).Set(0.7)
    shader.CreateInput("opacity", Sdf.ValueTypeNames.Float).Set(float(m.color[3]))
    color = shader.CreateInput("diffuseColor", Sdf.ValueTypeNames.Color3f)
    color.Set(tuple(float(c) for c in m.color[:3]))
    copied = []
    if textured and m.texture is not None:
        shutil.copyfile(m.texture, folder / m.texture.name)
        copied.append(m.texture.name)
        reader = UsdShade.Shader.Define(stage, "/face/material/st")
        reader.CreateIdAttr("UsdPrimvarReader_float2")
        reader.CreateInput("varname", Sdf.ValueTypeNames.Token).Set("st")
        tex = UsdShade.Shader.Define(stage, "/face/material/texture")
        tex.CreateIdAttr("UsdUVTexture")
        tex.CreateInput("file", Sdf.ValueTypeNames.Asset).Set(f"./{m.texture.name}")
        tex.CreateInput("st", Sdf.ValueTypeNames.Float2).ConnectToSource(reader.ConnectableAPI(), "result")
        color.ConnectToSource(tex.ConnectableAPI(), "rgb")
        tex.CreateOutput("rgb", Sdf.ValueTypeNames.Float3)
    mat.CreateSurfaceOutput().ConnectToSource(shader.ConnectableAPI(), "surface")
    UsdShade.MaterialBindingAPI.Apply(mesh.GetPrim()).Bind(mat)
    return copied


def _blendshapes(stage, mesh, morph, fps: float) -> None:
    """UsdSkel blend shapes + a one-joint skeleton and its animation (weights per frame)."""
    Gf, Sdf, Usd, UsdGeom, _, UsdSkel, Vt = _pxr()
    names = [_prim_name(n) for n in morph.names]
    skel = UsdSkel.Skeleton.Define(stage, "/face/skeleton")
    skel.CreateJointsAttr(["root"])
    skel.CreateBindTransformsAttr(Vt.Matrix4dArray([Gf.Matrix4d(1.0)]))
    skel.CreateRestTransformsAttr(Vt.Matrix4dArray([Gf.Matrix4d(1.0)]))
    anim = UsdSkel.Animation.Define(stage, "/face/skeleton/animation")
    anim.CreateJointsAttr(["root"])
    anim.CreateTranslationsAttr(Vt.Vec3fArray([Gf.Vec3f(0.0)]))
    anim.CreateRotationsAttr(Vt.QuatfArray([Gf.Quatf(1.0)]))
    anim.CreateScalesAttr(Vt.Vec3hArray([Gf.Vec3h(1.0)]))
    anim.CreateBlendShapesAttr(names)
    weights = anim.CreateBlendShapeWeightsAttr()
    for i, w in enumerate(morph.weights):
        weights.Set(Vt.FloatArray.FromNumpy(np.ascontiguousarray(w, np.float32)), Usd.TimeCode(i))
    UsdSkel.BindingAPI.Apply(skel.GetPrim()).CreateAnimationSourceRel().SetTargets([anim.GetPath()])
    binding = UsdSkel.BindingAPI.Apply(mesh.GetPrim())
    binding.CreateSkeletonRel().SetTargets([skel.GetPath()])
    binding.CreateJointIndicesPrimvar(constant=True, elementSize=1).Set([0])
    binding.CreateJointWeightsPrimvar(constant=True, elementSize=1).Set([1.0])
    binding.CreateGeomBindTransformAttr(Gf.Matrix4d(1.0))
    binding.CreateBlendShapesAttr(names)
    targets = []
    for name, offsets in zip(names, morph.targets):
        shape = UsdSkel.BlendShape.Define(stage, mesh.GetPath().AppendChild(name))
        moved = np.flatnonzero(np.abs(offsets).max(axis=1) > 0)  # sparse: only the vertices it moves
        shape.CreateOffsetsAttr(Vt.Vec3fArray.FromNumpy(np.ascontiguousarray(offsets[moved], np.float32)))
        shape.CreatePointIndicesAttr(Vt.IntArray.FromNumpy(moved.astype(np.int32)))
        targets.append(shape.GetPath())
    binding.CreateBlendShapeTargetsRel().SetTargets(targets)


def write_usd(path: str | Path, verts: np.ndarray, neutral: np.ndarray, faces: np.ndarray, fps: float,
              duration: float | None = None, rig: tuple[list[str], np.ndarray, np.ndarray] | None = None,
              visuals: Visuals | None = None) -> list[str]:
    """Write the stage described above to ``path`` (``.usdc``/``.usda``), atomically.

    Args:
        verts: (T, V, 3) (may be a memory map); neutral: (V, 3); faces: (F, 3).
        duration: the speech's length in seconds (the end time code).
        rig: (K names, basis (K, V, 3), weights (T, K)) for an ARKit-rig face: adds the
            ``blendshapes`` variant.
    Returns:
        the file names written (the stage, and the texture copied next to it).
    """
    Gf, Sdf, Usd, UsdGeom, _, UsdSkel, Vt = _pxr()
    path = Path(path)
    t = len(verts)
    layer = Sdf.Layer.CreateAnonymous(path.suffix)
    stage = Usd.Stage.Open(layer)
    stage.SetTimeCodesPerSecond(float(fps))
    stage.SetFramesPerSecond(float(fps))
    stage.SetStartTimeCode(0)
    stage.SetEndTimeCode(max(t - 1, (duration or 0.0) * fps))
    UsdGeom.SetStageUpAxis(stage, UsdGeom.Tokens.y)
    UsdGeom.SetStageMetersPerUnit(stage, 1.0)
    root = UsdSkel.Root.Define(stage, "/face")
    stage.SetDefaultPrim(root.GetPrim())
    mesh = UsdGeom.Mesh.Define(stage, "/face/mesh")
    faces = np.asarray(faces, np.int64)
    mesh.CreateFaceVertexCountsAttr(Vt.IntArray.FromNumpy(np.full(len(faces), 3, np.int32)))
    mesh.CreateFaceVertexIndicesAttr(Vt.IntArray.FromNumpy(faces.reshape(-1).astype(np.int32)))
    mesh.CreateSubdivisionSchemeAttr(UsdGeom.Tokens.none)
    mesh.CreateDoubleSidedAttr(True)
    uv = None if visuals is None else visuals.corner_uv
    if uv is not None:
        st = UsdGeom.PrimvarsAPI(mesh).CreatePrimvar("st", Sdf.ValueTypeNames.TexCoord2fArray,
                                                    UsdGeom.Tokens.faceVarying)
        st.Set(Vt.Vec2fArray.FromNumpy(np.ascontiguousarray(uv.reshape(-1, 2), np.float32)))
    copied = _material(stage, mesh, visuals.material if visuals else None, path.parent, uv is not None)
    motion = root.GetPrim().GetVariantSets().AddVariantSet("motion")
    motion.AddVariant("points")
    if rig is not None:
        motion.AddVariant("blendshapes")
        from talkinghead_cli.export_gltf import rig_morph

        motion.SetVariantSelection("blendshapes")
        with motion.GetVariantEditContext():
            base = np.ascontiguousarray(neutral, np.float32)
            mesh.CreatePointsAttr(Vt.Vec3fArray.FromNumpy(base))
            mesh.CreateExtentAttr(Vt.Vec3fArray([Gf.Vec3f(*map(float, base.min(0))), Gf.Vec3f(*map(float, base.max(0)))]))
            _blendshapes(stage, mesh, rig_morph(verts, np.asarray(neutral, np.float32), *rig), fps)
    motion.SetVariantSelection("points")
    with motion.GetVariantEditContext():
        points, extent = mesh.CreatePointsAttr(), mesh.CreateExtentAttr()
        for i in range(t):
            frame = np.ascontiguousarray(verts[i], np.float32)
            points.Set(Vt.Vec3fArray.FromNumpy(frame), Usd.TimeCode(i))
            extent.Set(Vt.Vec3fArray([Gf.Vec3f(*map(float, frame.min(0))), Gf.Vec3f(*map(float, frame.max(0)))]),
                       Usd.TimeCode(i))
    with atomic_file(path) as tmp:
        if not layer.Export(str(tmp)):
            raise OSError(f"USD could not write {tmp}")
    return [path.name, *copied]
