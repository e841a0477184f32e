// Load an avtalk GLB with three.js's GLTFLoader under node and print what a three.js app sees.
//
//   node tests/js/load_gltf.mjs THREE_DIR FILE.glb [TIME_S ...]
//
// THREE_DIR is the installed `three` package (e.g. .ci/node/node_modules/three). Prints one JSON
// object: the mesh's vertex count, morph target names, the animation clip (duration, tracks,
// the range of its keyframe values), the material (type, metalness), whether normals exist, and
// the vertex positions at each TIME_S, posed by three's own code: an AnimationMixer plays the
// clip, sets mesh.morphTargetInfluences, and Mesh.getVertexPosition applies them to the base
// positions and morph deltas (glTF morph targets are relative) in the mesh's world frame.
// Node has no DOM: GLTFLoader's texture loading (an Image or ImageBitmap) is unavailable, so
// embedded images are counted but not decoded; geometry, morphs, materials and animation parse.
import { readFileSync } from "node:fs";
import { pathToFileURL } from "node:url";
import path from "node:path";

const [threeDir, file, ...timeArgs] = process.argv.slice(2);
if (!threeDir || !file) {
  console.error("usage: node load_gltf.mjs THREE_DIR FILE.glb [TIME_S ...]");
  process.exit(2);
}
const THREE = await import(pathToFileURL(path.join(threeDir, "build", "three.module.js")).href);
const { GLTFLoader } = await import(
  pathToFileURL(path.join(threeDir, "examples", "jsm", "loaders", "GLTFLoader.js")).href);

const bytes = readFileSync(file);
const buffer = bytes.buffer.slice(bytes.byteOffset, bytes.byteOffset + bytes.byteLength);
const warnings = [];
const warn = console.warn;
console.warn = (...args) => warnings.push(args.join(" "));  // keep stdout JSON-only, report them
const gltf = await new GLTFLoader().parseAsync(buffer, "");
console.warn = warn;

const meshes = [];
gltf.scene.traverse((o) => { if (o.isMesh) meshes.push(o); });
if (meshes.length !== 1) {
  console.error(`expected one mesh, found ${meshes.length}`);
  process.exit(1);
}
const mesh = meshes[0];
const geometry = mesh.geometry;
const morphs = geometry.morphAttributes.position || [];
const names = Object.entries(mesh.morphTargetDictionary || {}).sort((a, b) => a[1] - b[1]).map((e) => e[0]);
const clip = gltf.animations[0];
let low = Infinity, high = -Infinity;
for (const track of clip ? clip.tracks : []) {
  for (const v of track.values) { low = Math.min(low, v); high = Math.max(high, v); }
}

gltf.scene.updateMatrixWorld(true);
const mixer = new THREE.AnimationMixer(gltf.scene);
if (clip) {  // play once and hold the last key, as a player does at the end of the speech
  const action = mixer.clipAction(clip);
  action.setLoop(THREE.LoopOnce, 1);
  action.clampWhenFinished = true;
  action.play();
}
const count = geometry.attributes.position.count;
const v = new THREE.Vector3();
const samples = timeArgs.map(Number).map((time) => {
  mixer.setTime(time);
  const positions = new Array(count);
  for (let i = 0; i < count; i++) {
    mesh.getVertexPosition(i, v).applyMatrix4(mesh.matrixWorld);
    positions[i] = [v.x, v.y, v.z];
  }
  return { time, influences: Array.from(mesh.morphTargetInfluences), positions };
});

const material = mesh.material;
console.log(JSON.stringify({
  three: THREE.REVISION,
  vertices: count,
  morph_targets: morphs.length,
  morph_target_names: names,
  morph_targets_relative: geometry.morphTargetsRelative,
  clip: clip ? {
    name: clip.name, duration: clip.duration,
    tracks: clip.tracks.map((t) => ({ name: t.name, type: t.ValueTypeName, keys: t.times.length,
                                      interpolation: t.getInterpolation() })),
    min_value: low, max_value: high,
  } : null,
  material: { type: material.type, metalness: material.metalness, roughness: material.roughness,
              color: material.color ? material.color.toArray() : null, has_map: Boolean(material.map) },
  normals: Boolean(geometry.attributes.normal),
  morph_normals: Boolean(geometry.morphAttributes.normal),
  uvs: Boolean(geometry.attributes.uv),
  images: (gltf.parser.json.images || []).length,
  warnings,
  samples,
}));
